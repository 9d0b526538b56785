package cache

import (
	"errors"
	"io"

	"github.com/ckptfs/ckptfs/cache/ingest"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Ingest reads r to its end, stores it as chunks (see ingest.Run) and
// returns its manifest.
// Its chunks are kept from reclaim until it returns, and for a while
// after, for the content to be committed (see liveChunks).
func (s *Store) Ingest(r io.Reader) (*meta.Content, error) {
	p := &pinningPutter{s: s}
	defer p.release()
	return ingest.Run(r, p)
}

// Writer streams bytes into Ingest as they are written.
type Writer struct {
	pw     *io.PipeWriter
	result chan ingestResult
	n      int64
}

type ingestResult struct {
	content *meta.Content
	err     error
}

// NewWriter starts an ingest fed by writes.
func (s *Store) NewWriter() *Writer {
	pr, pw := io.Pipe()
	w := &Writer{pw: pw, result: make(chan ingestResult, 1)}
	go func() {
		c, err := s.Ingest(pr)
		if err != nil {
			pr.CloseWithError(err) // the writer's next Write gets the reason, ENOSPC say
		}
		w.result <- ingestResult{c, err}
	}()
	return w
}

// Write appends p to the stream.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	w.n += int64(n)
	return n, err
}

// Len is the number of bytes written so far.
func (w *Writer) Len() int64 { return w.n }

// Close ends the stream and returns the stored content.
func (w *Writer) Close() (*meta.Content, error) {
	w.pw.Close()
	r := <-w.result
	return r.content, r.err
}

// Abort discards the stream; chunks already written are left to gc.
func (w *Writer) Abort() {
	w.pw.CloseWithError(errors.New("aborted"))
	<-w.result
}
