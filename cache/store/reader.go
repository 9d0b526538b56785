package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/chunkcache"
	"github.com/ckptfs/ckptfs/cache/meta"
)

// readaheadChunks is how many chunks past a sequential read are loaded in
// the background, at most: the window starts at 2 reads' worth on a
// reader's third read in a row and doubles with each further one, up to 32
// reads' worth, as the kernel's readahead does, so that a random reader (a
// loader's preads at tensor offsets, each followed by the kernel's own
// readahead request) decodes what it touches and not 32 chunks after each.
const readaheadChunks = 32

// Readahead is one reader's position, which decides the readahead of its
// next read. Each open file handle has its own, so that two readers at
// different offsets do not switch each other's off.
type Readahead struct {
	mu     sync.Mutex
	last   int // index of the chunk the previous read ended in
	streak int // reads in a row that continued the one before
}

// NewReadahead is the position of a reader that has read nothing: a first
// read from the start counts as continuing it.
func NewReadahead() *Readahead { return &Readahead{last: -1} }

// next records a read of chunks first to lastRead and returns how many
// reads of its size past lastRead to load ahead.
func (ra *Readahead) next(first, lastRead int) int {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	if first == ra.last || first == ra.last+1 {
		ra.streak++
	} else {
		ra.streak = 0
	}
	ra.last = lastRead
	if ra.streak < 2 {
		return 0
	}
	return min(1<<(ra.streak-1), readaheadChunks)
}

// FileReader reads a file's content from its chunk list. It is safe for
// concurrent use; sequential reads trigger parallel readahead.
type FileReader struct {
	store  *Store
	name   string // for error messages
	chunks []chunk.Ref
	starts []int64 // starts[i] = offset of chunks[i]; starts[len] = size
	// staged reads content not chunked yet from its staged file, opened
	// when the reader is made: the open file keeps the bytes once the
	// settler removes the name (see settle.go).
	staged *stagedReader
	ra     *Readahead // for ReadAt and ReadAtContext
}

// NewReader reads content; name labels errors and logs.
func (s *Store) NewReader(name string, c *meta.Content) *FileReader {
	if c.Staged != 0 {
		return &FileReader{store: s, name: name, starts: []int64{c.Size}, staged: s.openStaged(c)}
	}
	starts := make([]int64, len(c.Chunks)+1)
	for i, ch := range c.Chunks {
		starts[i+1] = starts[i] + int64(ch.Len)
	}
	return &FileReader{store: s, name: name, chunks: c.Chunks, starts: starts, ra: NewReadahead()}
}

// Size is the content length.
func (r *FileReader) Size() int64 { return r.starts[len(r.chunks)] }

// ReadAt fills p from off. Short reads happen only at the end of the file
// (io.EOF). A chunk that fails verification is logged and returned as an
// error wrapping chunk.ErrCorrupt: never wrong bytes.
func (r *FileReader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt for a reader that may give up: a chunk fetched
// from a bucket for it stops being fetched once ctx is done.
func (r *FileReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return r.ReadAhead(ctx, r.ra, p, off)
}

// ReadAhead is ReadAtContext for the reader at position ra, which it
// updates.
func (r *FileReader) ReadAhead(ctx context.Context, ra *Readahead, p []byte, off int64) (int, error) {
	if off >= r.Size() {
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.Size()-off)
	n, err := r.readSpans(ctx, ra, []Span{{Dst: p[:want], Off: off}})
	if err == nil && want < int64(len(p)) {
		err = io.EOF
	}
	return n, err
}

// errNegativeOffset is a read before the start: a plan gone wrong, refused
// rather than a panic.
var errNegativeOffset = errors.New("negative offset")

// Span is a run of bytes to read: len(Dst) bytes from Off.
type Span struct {
	Dst []byte
	Off int64
}

// ReadSpans fills spans, each whole (io.EOF if one runs past the end).
// Spans in increasing order that share a chunk, as the rows of one rank's
// part of a tensor split on dim 1 do, fetch it once and count as one read
// for readahead: read one at a time, a 1 MiB read of a tensor split 8 ways
// cost a chunk lookup and a readahead check per 1 KiB row part.
func (r *FileReader) ReadSpans(ctx context.Context, spans []Span) error {
	_, err := r.readSpans(ctx, r.ra, spans)
	return err
}

// readSpans fills spans for the reader at ra and returns how many bytes it
// filled, in order, before an error.
func (r *FileReader) readSpans(ctx context.Context, ra *Readahead, spans []Span) (int, error) {
	for _, s := range spans {
		if s.Off < 0 {
			return 0, fmt.Errorf("%s: read at %d: %w", r.name, s.Off, errNegativeOffset)
		}
	}
	n := 0
	if r.staged != nil {
		for _, s := range spans {
			got, err := r.staged.readAt(r, s.Dst, s.Off)
			n += got
			if err != nil {
				return n, err
			}
		}
		return n, nil
	}
	cur, first := -1, -1
	var held chunkcache.Chunk
	defer func() { held.Release() }()
	for _, s := range spans {
		for done := 0; done < len(s.Dst); {
			off := s.Off + int64(done)
			if off >= r.Size() {
				return n, io.EOF
			}
			if cur < 0 || off < r.starts[cur] || off >= r.starts[cur+1] {
				held.Release()
				var err error
				cur = r.chunkAt(off)
				if held, err = r.chunk(ctx, cur); err != nil {
					return n, err
				}
				if first < 0 {
					first = cur
				}
			}
			got := copy(s.Dst[done:], held.Data[off-r.starts[cur]:])
			done += got
			n += got
		}
	}
	if cur >= 0 {
		r.readahead(ra, first, cur, n)
	}
	return n, nil
}

// chunkAt is the index of the chunk holding off, len(r.chunks) past the end.
func (r *FileReader) chunkAt(off int64) int {
	return sort.Search(len(r.chunks), func(i int) bool { return r.starts[i+1] > off })
}

// chunk is chunk i's bytes, held until the caller releases them, checked
// against the length the content says.
func (r *FileReader) chunk(ctx context.Context, i int) (chunkcache.Chunk, error) {
	got, err := r.store.chunks.Get(ctx, r.chunks[i].Hash)
	if err == nil && len(got.Data) != int(r.chunks[i].Len) { // a manifest from a bucket may lie
		got.Release()
		err = fmt.Errorf("chunk %s: %d bytes, the manifest says %d: %w", r.chunks[i].Hash.Short(), len(got.Data), r.chunks[i].Len, chunk.ErrCorrupt)
	}
	if err != nil {
		if errors.Is(err, chunk.ErrCorrupt) {
			r.store.log.Error("read failed verification", "file", r.name, "chunk", r.chunks[i].Hash.String(), "err", err)
		}
		return chunkcache.Chunk{}, fmt.Errorf("%s: %w", r.name, err)
	}
	return got, nil
}

// readahead warms the chunks after a read of chunks first to lastRead, n
// bytes, by the reader at ra: as many reads of n bytes as its streak of
// sequential reads earns, at most readaheadChunks chunks. Counted in the
// reader's bytes, not in chunks: a view's source a tile reads 128 KiB at a
// time, eight of them in turn, and at 32 chunks each they loaded 256 MiB
// ahead into a cache of 128 and decoded 1.75x the chunks they read.
func (r *FileReader) readahead(ra *Readahead, first, lastRead, n int) {
	end := r.windowEnd(lastRead, int64(ra.next(first, lastRead))*int64(n))
	for j := lastRead + 1; j <= end; j++ {
		r.store.chunks.Warm(r.chunks[j].Hash)
	}
}

// windowEnd is the last chunk of a readahead of want bytes after chunk
// lastRead: the chunks that hold them, at most readaheadChunks.
func (r *FileReader) windowEnd(lastRead int, want int64) int {
	j := lastRead
	for ; want > 0 && j < lastRead+readaheadChunks && j+1 < len(r.chunks); j++ {
		want -= int64(r.chunks[j+1].Len)
	}
	return j
}
