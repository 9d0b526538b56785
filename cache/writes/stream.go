package writes

import (
	"errors"
	"io"

	"github.com/ckptfs/ckptfs/cache/meta"
)

// stream feeds the store's ingest with writes as they come: the content of
// a file written in order from empty, chunked before its commit.
type stream struct {
	pw     *io.PipeWriter
	result chan ingestResult
	n      int64
}

type ingestResult struct {
	content *meta.Content
	release func()
	err     error
}

func newStream(st Store) *stream {
	pr, pw := io.Pipe()
	w := &stream{pw: pw, result: make(chan ingestResult, 1)}
	go func() {
		c, release, err := st.Ingest(pr)
		if err != nil {
			pr.CloseWithError(err) // the writer's next Write gets the reason, ENOSPC say
		}
		w.result <- ingestResult{c, release, err}
	}()
	return w
}

// Write appends p to the stream.
func (w *stream) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	w.n += int64(n)
	return n, err
}

// Len is the number of bytes written so far.
func (w *stream) Len() int64 { return w.n }

// Close ends the stream and returns the stored content, its chunks kept
// until release is called (see store.Ingest).
func (w *stream) Close() (*meta.Content, func(), error) {
	w.pw.Close()
	r := <-w.result
	return r.content, r.release, r.err
}

// Abort discards the stream; chunks already written are left to reclaim.
func (w *stream) Abort() {
	w.pw.CloseWithError(errors.New("aborted"))
	(<-w.result).release()
}
