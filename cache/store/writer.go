package store

import (
	"errors"
	"io"

	"github.com/ckptfs/ckptfs/cache/ingest"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// Ingest reads r to its end, stores it as chunks (see ingest.Run) and
// returns its manifest. Its chunks are kept from reclaim until release is
// called, which the caller does once the content is committed or given up
// (and after SyncChunks, for a record that names them). release is never
// nil.
func (s *Store) Ingest(r io.Reader) (c *meta.Content, release func(), err error) {
	p := &pinningPutter{s: s}
	c, err = ingest.Run(r, p)
	if err != nil {
		p.release()
		return nil, func() {}, err
	}
	return c, p.release, nil
}

// Writer streams bytes into Ingest as they are written.
type Writer struct {
	pw     *io.PipeWriter
	result chan ingestResult
	n      int64
}

type ingestResult struct {
	content *meta.Content
	release func()
	err     error
}

// NewWriter starts an ingest fed by writes.
func (s *Store) NewWriter() *Writer {
	pr, pw := io.Pipe()
	w := &Writer{pw: pw, result: make(chan ingestResult, 1)}
	go func() {
		c, release, err := s.Ingest(pr)
		if err != nil {
			pr.CloseWithError(err) // the writer's next Write gets the reason, ENOSPC say
		}
		w.result <- ingestResult{c, release, err}
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

// Close ends the stream and returns the stored content, its chunks kept
// until release is called (see Ingest).
func (w *Writer) Close() (*meta.Content, func(), error) {
	w.pw.Close()
	r := <-w.result
	return r.content, r.release, r.err
}

// Abort discards the stream; chunks already written are left to reclaim.
func (w *Writer) Abort() {
	w.pw.CloseWithError(errors.New("aborted"))
	(<-w.result).release()
}
