package torch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// Record is one run of a checkpoint stream, in stream order: one tensor's
// bytes, or bytes around tensors (a safetensors header, zip headers and
// descriptors, zip entries that are not storage records).
type Record struct {
	Size   int64
	Tensor bool
	DType  safetensors.DType // the tensor's dtype, "" when unknown
	// R reads the record's bytes; it ends early where the stream does.
	R io.Reader
}

// Format is what a stream was read as.
type Format int

const (
	Opaque Format = iota // no records: the whole stream is the rest
	Safetensors
	Zip // a zip of stored entries, as torch.save writes
)

// ReadRecords reads the checkpoint stream r as records, handing each to
// yield in order, as far as it can follow the stream: it returns what it
// read the stream as and the rest of the stream, unread (a zip's central
// directory, bytes after the last tensor, or what it could not follow). A
// yield that leaves bytes of its record unread has them skipped. A stream
// that ends early ends the records, not in an error: a truncated file is
// read as far as it goes. Memory is bounded by the larger of a
// safetensors header (safetensors.MaxHeaderSize) and a torch archive's
// data.pkl (pickle.MaxSize); tensor bytes stream through.
func ReadRecords(r *bufio.Reader, yield func(Record) error) (Format, io.Reader, error) {
	head, _ := r.Peek(9)
	if len(head) == 9 && head[8] == '{' {
		if n, err := safetensors.HeaderLen(head); err == nil {
			rest, err := safetensorsRecords(r, n, yield)
			return Safetensors, rest, err
		}
	}
	if bytes.HasPrefix(head, zipLocalSig) {
		rest, err := zipRecords(r, yield)
		return Zip, rest, err
	}
	return Opaque, r, nil
}

// safetensorsRecords yields the 8+n header bytes, then each tensor the
// header lists; a header that does not parse ends the records there.
func safetensorsRecords(r io.Reader, n int64, yield func(Record) error) (io.Reader, error) {
	head := make([]byte, 8+n)
	got, err := io.ReadFull(r, head)
	if err := yield(Record{Size: int64(got), R: bytes.NewReader(head[:got])}); err != nil {
		return nil, err
	}
	if err != nil {
		return r, streamEnd(err)
	}
	h, err := safetensors.ParseHeaderJSON(head[8:])
	if err != nil {
		return r, nil
	}
	for _, t := range h.Tensors {
		if err := yieldRun(r, Record{Size: t.Len(), Tensor: true, DType: t.DType}, yield); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// yieldRun yields the next rec.Size bytes of r as rec and skips what
// yield left unread.
func yieldRun(r io.Reader, rec Record, yield func(Record) error) error {
	lr := &io.LimitedReader{R: r, N: rec.Size}
	rec.R = lr
	if err := yield(rec); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, lr)
	return streamEnd(err)
}

// streamEnd treats a stream that ends early as ended, not failed.
func streamEnd(err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return fmt.Errorf("read: %w", err)
}
