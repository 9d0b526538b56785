// Package ingest turns a stream of bytes into stored chunks: it recognizes
// safetensors and torch.save zips and cuts them at tensor and storage
// record boundaries (with dtype hints for the codecs), cuts anything else
// by content, and stores the chunks through a Putter on all cores.
package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/layout/torch"
	"github.com/restic/chunker"
)

// cdcPolynomial is the fixed irreducible polynomial of the content-defined
// chunker; it must never change, or opaque files stop deduplicating against
// what is already stored.
const cdcPolynomial = chunker.Pol(0x3DA3358B4DC173)

// Content-defined chunk bounds for opaque files.
const (
	cdcMin = 256 << 10
	// smallTail is what splitCDC reads before it knows a stream needs the
	// chunker; below cdcMin, so a stream that short is one chunk either way.
	smallTail = 64 << 10
	cdcMax    = chunk.MaxSize
)

// Run reads r to its end, splits it into chunks, stores each through p
// and returns the file's manifest. A safetensors stream is split at tensor
// boundaries, a torch.save zip at storage records; anything else by
// content-defined chunking. Chunks are hashed, compressed and written in
// parallel, in order.
func Run(r io.Reader, p Putter) (*meta.Content, error) {
	pl := newPipeline(p)
	kind, err := split(bufio.NewReaderSize(r, 1<<20), pl.emit, pl.buffer)
	res, perr := pl.wait()
	if err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, perr
	}
	res.Kind = kind
	return res, nil
}

// Putter stores one chunk: the store, to ingest.
type Putter interface {
	PutChunk(raw []byte, hint chunk.Hint) (chunk.Ref, error)
}

// pipeline stores chunks on all cores while keeping their order.
type pipeline struct {
	putter Putter
	// bufs holds chunk buffers of chunk.MaxSize: a stored chunk's buffer
	// takes the next one, where a new one each would leave a megabyte of
	// garbage per chunk for the collector.
	bufs    sync.Pool
	failed  atomic.Pointer[error] // first store error, seen by emit
	work    chan *pending
	ordered chan *pending
	done    chan struct{}
	result  meta.Content
	err     error
}

type pending struct {
	raw    []byte
	pooled bool // raw is one of the pipeline's buffers
	hint   chunk.Hint
	ref    chunk.Ref
	err    error
	ready  chan struct{}
}

func newPipeline(putter Putter) *pipeline {
	workers := runtime.NumCPU()
	p := &pipeline{
		putter:  putter,
		work:    make(chan *pending, workers),
		ordered: make(chan *pending, 2*workers), // bounds memory in flight
		done:    make(chan struct{}),
	}
	for range workers {
		go func() {
			for c := range p.work {
				c.ref, c.err = putter.PutChunk(c.raw, c.hint)
				if c.err != nil {
					p.failed.CompareAndSwap(nil, &c.err)
				}
				if c.pooled { // the store keeps nothing of it
					buf := c.raw
					p.bufs.Put(&buf)
				}
				c.raw = nil
				close(c.ready)
			}
		}()
	}
	go func() {
		defer close(p.done)
		for c := range p.ordered {
			<-c.ready
			if c.err != nil && p.err == nil {
				p.err = c.err
			}
			p.result.Chunks = append(p.result.Chunks, c.ref)
			p.result.Size += int64(c.ref.Len)
		}
	}()
	return p
}

// buffer is a buffer of n bytes, at most chunk.MaxSize, for one chunk.
func (p *pipeline) buffer(n int) []byte {
	if b, ok := p.bufs.Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, chunk.MaxSize)
}

// emit queues one chunk; it owns raw from here on, and takes it back for
// another chunk once stored when pooled (raw came from buffer). It fails
// once a chunk could not be stored, so that the writer stops early.
func (p *pipeline) emit(raw []byte, hint chunk.Hint, pooled bool) error {
	if err := p.failed.Load(); err != nil {
		return *err
	}
	c := &pending{raw: raw, pooled: pooled, hint: hint, ready: make(chan struct{})}
	p.ordered <- c
	p.work <- c
	return nil
}

func (p *pipeline) wait() (*meta.Content, error) {
	close(p.work)
	close(p.ordered)
	<-p.done
	if p.err != nil {
		return nil, p.err
	}
	return &p.result, nil
}

// emitFunc takes one chunk; pooled says raw came from the allocFunc.
type emitFunc func(raw []byte, hint chunk.Hint, pooled bool) error

// allocFunc gives a buffer of n bytes, at most chunk.MaxSize, whose
// capacity is chunk.MaxSize.
type allocFunc func(n int) []byte

// split cuts the stream into chunks along the records layout reads in it:
// every tensor starts a chunk and is cut in chunk.MaxSize pieces from its
// first byte, so the same tensor bytes give the same chunks in any file,
// safetensors or torch zip; the bytes between tensors go out together, as
// chunks of their own. What layout cannot follow is chunked by content.
func split(r *bufio.Reader, emit emitFunc, alloc allocFunc) (meta.Kind, error) {
	var glue []byte // bytes between tensors, not emitted yet
	format, rest, err := torch.ReadRecords(r, func(rec torch.Record) error {
		if !rec.Tensor && rec.Size <= chunk.MaxSize {
			var err error
			if glue, err = appendAll(glue, rec.R); err != nil {
				return err
			}
			// Whole pieces go out as they fill: a zip of many small
			// entries (zip -0, np.savez) holds at most a piece in memory.
			full := len(glue) - len(glue)%chunk.MaxSize
			if err := emitPieces(glue[:full], emit); err != nil {
				return err
			}
			glue = append(glue[:0:0], glue[full:]...)
			return nil
		}
		if err := emitPieces(glue, emit); err != nil {
			return err
		}
		glue = nil
		return emitRun(rec.R, rec.Size, chunk.Hint(rec.DType), emit, alloc)
	})
	if err == nil {
		err = emitPieces(glue, emit)
	}
	if err == nil {
		err = splitCDC(rest, emit, alloc)
	}
	return kindOf(format), err
}

// kindOf is the kind of content a file read as format is.
func kindOf(format torch.Format) meta.Kind {
	switch format {
	case torch.Safetensors:
		return meta.KindSafetensors
	case torch.Zip:
		return meta.KindZip
	}
	return meta.KindOpaque
}

// appendAll appends what r reads to b.
func appendAll(b []byte, r io.Reader) ([]byte, error) {
	w := bytes.NewBuffer(b)
	_, err := w.ReadFrom(r)
	return w.Bytes(), err
}

// emitRun emits the next n bytes of r in pieces of at most chunk.MaxSize from
// the first, so the same run gives the same chunks wherever it stands. A
// stream that ends first is stored as it is (see eofOK).
func emitRun(r io.Reader, n int64, hint chunk.Hint, emit emitFunc, alloc allocFunc) error {
	for left := n; left > 0; {
		buf := alloc(int(min(left, chunk.MaxSize)))
		got, err := io.ReadFull(r, buf)
		if got > 0 {
			if err := emit(buf[:got], hint, true); err != nil {
				return err
			}
		}
		if err != nil {
			return eofOK(err)
		}
		left -= int64(got)
	}
	return nil
}

func emitPieces(b []byte, emit emitFunc) error {
	for len(b) > 0 {
		n := min(len(b), chunk.MaxSize)
		if err := emit(b[:n], "", false); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func splitCDC(r io.Reader, emit emitFunc, alloc allocFunc) error {
	// A stream shorter than the smallest cut is one chunk: read alone, it
	// costs its size, not a chunk buffer and the chunker's (a megabyte and
	// a half for each config.json or 200-byte log line of a training run).
	head := make([]byte, smallTail)
	n, err := io.ReadFull(r, head)
	if err == io.EOF {
		return nil
	}
	if err == io.ErrUnexpectedEOF {
		return emit(head[:n], "", false)
	}
	if err != nil {
		return err
	}
	c := chunker.NewWithBoundaries(io.MultiReader(bytes.NewReader(head), r), cdcPolynomial, cdcMin, cdcMax)
	for {
		ch, err := c.Next(alloc(0))
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := emit(ch.Data, "", true); err != nil {
			return err
		}
	}
}

// eofOK treats a stream that ends early as complete: a truncated file is
// stored as it is.
func eofOK(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return fmt.Errorf("ingest: %w", err)
}
