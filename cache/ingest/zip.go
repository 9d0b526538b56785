package ingest

import (
	"bytes"
	"io"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/layout"
)

// zipSplitter splits a stream of stored zip entries, as torch.save writes
// them, so that every storage record starts a chunk and is cut in chunk.MaxSize
// pieces from its first byte: the same tensor bytes give the same chunks as
// in a safetensors file. Headers, descriptors and small entries between
// records go out as their own chunks. torch.save writes data.pkl first and
// entry sizes only after the data, so record sizes come from the pickle.
type zipSplitter struct {
	r       io.Reader
	buf     []byte // read ahead, not yet emitted
	eof     bool
	glue    []byte // non-record bytes waiting to be emitted
	emit    emitFunc
	pickle  string                        // name of the data.pkl entry
	records map[string]layout.TorchRecord // by storage key
}

func splitZip(r io.Reader, emit emitFunc) error {
	z := &zipSplitter{r: r, emit: emit}
	for {
		ok, err := z.entry()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
	}
	// The central directory, or whatever the splitter could not follow.
	if err := z.flushGlue(); err != nil {
		return err
	}
	return splitCDC(io.MultiReader(bytes.NewReader(z.buf), z.r), emit)
}

// entry splits one zip entry; false when the stream does not continue with
// one that can be followed.
func (z *zipSplitter) entry() (bool, error) {
	if err := z.fill(4); err != nil || !bytes.HasPrefix(z.buf, layout.ZipLocalSig) {
		return false, err
	}
	h, need, perr := layout.ParseZipLocalHeader(z.buf)
	for perr == nil && need > len(z.buf) && !z.eof {
		if err := z.fill(need); err != nil {
			return false, err
		}
		h, need, perr = layout.ParseZipLocalHeader(z.buf)
	}
	if perr != nil || need > len(z.buf) {
		return false, nil // not an entry this splitter follows
	}
	z.glue = append(z.glue, z.take(h.Len)...)

	key, isRecord := "", false
	if z.pickle != "" {
		key, isRecord = layout.TorchStorageEntry(z.pickle, h.Name)
	}
	rec, known := z.records[key]
	size := h.Size
	if size < 0 && isRecord && known {
		size = rec.Bytes
	}
	if size < 0 {
		var err error
		if size, err = z.scanDescriptor(); err != nil || size < 0 {
			return false, err
		}
	}
	var err error
	switch {
	case isRecord && known:
		err = z.emitData(size, chunk.Hint(rec.DType))
	case size > chunk.MaxSize:
		err = z.emitData(size, "")
	default:
		err = z.smallEntry(h.Name, size)
	}
	if err != nil {
		return false, err
	}
	if h.Size < 0 {
		if err := z.fill(layout.MaxZipDescriptorLen); err != nil {
			return false, err
		}
		z.glue = append(z.glue, z.take(layout.ZipDescriptorLen(z.buf, size))...)
	}
	return true, nil
}

// smallEntry keeps an entry's data with the surrounding glue; data.pkl is
// read for the storage records' sizes and dtypes.
func (z *zipSplitter) smallEntry(name string, size int64) error {
	if err := z.fill(int(size)); err != nil {
		return err
	}
	data := z.take(int(size))
	if z.pickle == "" && layout.IsTorchPickle(name) {
		if p, err := layout.ParsePickle(data); err == nil {
			z.pickle, z.records = name, layout.TorchRecords(p)
		}
	}
	z.glue = append(z.glue, data...)
	return nil
}

// emitData emits size bytes of entry data in chunk.MaxSize pieces from its start.
func (z *zipSplitter) emitData(size int64, hint chunk.Hint) error {
	if err := z.flushGlue(); err != nil {
		return err
	}
	return emitRun(z, size, hint, z.emit)
}

// scanDescriptor finds the size of an entry whose header has none by the
// signed data descriptor after its data, looking at most MaxPickleSize
// ahead; -1 when there is none.
func (z *zipSplitter) scanDescriptor() (int64, error) {
	const step = 64 << 10
	for searched := 0; ; {
		if at := layout.FindZipDescriptor(z.buf, searched); at >= 0 {
			return int64(at), nil
		}
		if z.eof || len(z.buf) > layout.MaxPickleSize {
			return -1, nil
		}
		// A descriptor cut off at the end of buf is looked at again.
		searched = max(0, len(z.buf)-layout.MaxZipDescriptorLen)
		if err := z.fill(len(z.buf) + step); err != nil {
			return -1, err
		}
	}
}

func (z *zipSplitter) flushGlue() error {
	err := emitPieces(z.glue, z.emit)
	z.glue = nil
	return err
}

// fill reads until buf holds n bytes or the stream has ended.
func (z *zipSplitter) fill(n int) error {
	for len(z.buf) < n && !z.eof {
		more := make([]byte, max(n-len(z.buf), 64<<10))
		got, err := io.ReadAtLeast(z.r, more, n-len(z.buf))
		z.buf = append(z.buf, more[:got]...)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			z.eof = true
		} else if err != nil {
			return eofOK(err)
		}
	}
	return nil
}

// take removes up to n bytes from the front of buf; the caller may keep them.
func (z *zipSplitter) take(n int) []byte {
	n = min(n, len(z.buf))
	out := z.buf[:n:n]
	z.buf = z.buf[n:]
	return out
}

// Read reads the stream after what has been taken: the read-ahead first.
func (z *zipSplitter) Read(p []byte) (int, error) {
	if len(z.buf) > 0 {
		n := copy(p, z.buf)
		z.buf = z.buf[n:]
		return n, nil
	}
	if z.eof {
		return 0, io.EOF
	}
	n, err := z.r.Read(p)
	if err == io.EOF {
		z.eof = true
	}
	return n, err
}
