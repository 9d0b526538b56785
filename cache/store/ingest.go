package store

import (
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
