package torch

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/ckptfs/ckptfs/layout/pickle"
	"github.com/ckptfs/ckptfs/layout/safetensors"
)

// zipReader reads a stream of stored zip entries, as torch.save writes
// them, as records: every storage record is a tensor record; headers,
// descriptors and other entries are records of their own. torch.save
// writes data.pkl first and entry sizes only after the data, so record
// sizes come from the pickle.
type zipReader struct {
	r       io.Reader
	buf     []byte // read ahead, not yet yielded
	eof     bool
	yield   func(Record) error
	pickle  string                   // name of the data.pkl entry
	records map[string]storageRecord // by storage key
}

// maxEntryRead bounds the zip entries read whole (data.pkl among them);
// longer ones stream through as records of their own.
const maxEntryRead = 1 << 20

// zipRecords yields the entries of r it can follow and returns the rest:
// whatever it could not follow, or the central directory of the last
// archive. Archives one after another, as a DCP .distcp file holds them
// (one torch.save archive an item), are followed through their central
// directories, and so is a safetensors file after them (a .distcp of
// SerializationFormat.SAFETENSORS).
func zipRecords(r io.Reader, yield func(Record) error) (io.Reader, error) {
	z := &zipReader{r: r, yield: yield}
	for {
		ok, err := z.entry()
		if err != nil {
			return nil, err
		}
		if ok {
			continue
		}
		if ok, err = z.archiveEnd(); err != nil || !ok {
			return io.MultiReader(bytes.NewReader(z.buf), z.r), err
		}
		z.pickle, z.records = "", nil
		if err := z.fill(9); err != nil {
			return nil, err
		}
		if len(z.buf) >= 9 && z.buf[8] == '{' {
			if n, err := safetensors.HeaderLen(z.buf); err == nil {
				return safetensorsRecords(z, n, yield)
			}
		}
	}
}

// archiveEnd yields an archive's central directory through its end
// record, found within maxEntryRead, when another archive or a
// safetensors file follows it; false when neither does.
func (z *zipReader) archiveEnd() (bool, error) {
	if err := z.fill(4); err != nil || !bytes.HasPrefix(z.buf, []byte("PK\x01\x02")) {
		return false, err
	}
	const eocdLen = 22
	for {
		if at := bytes.Index(z.buf, []byte("PK\x05\x06")); at >= 0 && len(z.buf) >= at+eocdLen {
			end := at + eocdLen + int(binary.LittleEndian.Uint16(z.buf[at+20:]))
			if err := z.fill(end + 9); err != nil {
				return false, err
			}
			next := z.buf[min(end, len(z.buf)):]
			if !bytes.HasPrefix(next, zipLocalSig) && !(len(next) >= 9 && next[8] == '{') {
				return false, nil
			}
			return true, z.yieldBytes(end)
		}
		if z.eof || len(z.buf) > maxEntryRead {
			return false, nil
		}
		if err := z.fill(len(z.buf) + 64<<10); err != nil {
			return false, err
		}
	}
}

// entry yields one zip entry; false when the stream does not continue with
// one that can be followed.
func (z *zipReader) entry() (bool, error) {
	if err := z.fill(4); err != nil || !bytes.HasPrefix(z.buf, zipLocalSig) {
		return false, err
	}
	h, need, perr := parseZipLocalHeader(z.buf)
	for perr == nil && need > len(z.buf) && !z.eof {
		if err := z.fill(need); err != nil {
			return false, err
		}
		h, need, perr = parseZipLocalHeader(z.buf)
	}
	if perr != nil || need > len(z.buf) {
		return false, nil // not an entry this reader follows
	}
	if err := z.yieldBytes(h.Len); err != nil {
		return false, err
	}

	key, isRecord := "", false
	if z.pickle != "" {
		key, isRecord = storageEntry(z.pickle, h.Name)
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
		err = yieldRun(z, Record{Size: size, Tensor: true, DType: rec.DType}, z.yield)
	case size > maxEntryRead:
		err = yieldRun(z, Record{Size: size}, z.yield)
	default:
		err = z.smallEntry(h.Name, size)
	}
	if err != nil {
		return false, err
	}
	if h.Size < 0 {
		if err := z.fill(maxZipDescriptorLen); err != nil {
			return false, err
		}
		if err := z.yieldBytes(zipDescriptorLen(z.buf, size)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// smallEntry yields an entry read whole; data.pkl is parsed for the
// storage records' sizes and dtypes.
func (z *zipReader) smallEntry(name string, size int64) error {
	if err := z.fill(int(size)); err != nil {
		return err
	}
	data := z.take(int(size))
	if z.pickle == "" && isDataPickle(name) {
		if p, err := parsePickle(data); err == nil {
			z.pickle, z.records = name, storageRecords(p)
		}
	}
	return z.yield(Record{Size: int64(len(data)), R: bytes.NewReader(data)})
}

// yieldBytes yields the next n bytes read ahead.
func (z *zipReader) yieldBytes(n int) error {
	data := z.take(n)
	return z.yield(Record{Size: int64(len(data)), R: bytes.NewReader(data)})
}

// scanDescriptor finds the size of an entry whose header has none by the
// signed data descriptor after its data, looking at most pickle.MaxSize
// ahead; -1 when there is none.
func (z *zipReader) scanDescriptor() (int64, error) {
	const step = 64 << 10
	for searched := 0; ; {
		if at := findZipDescriptor(z.buf, searched); at >= 0 {
			return int64(at), nil
		}
		if z.eof || len(z.buf) > pickle.MaxSize {
			return -1, nil
		}
		// A descriptor cut off at the end of buf is looked at again.
		searched = max(0, len(z.buf)-maxZipDescriptorLen)
		if err := z.fill(len(z.buf) + step); err != nil {
			return -1, err
		}
	}
}

// fill reads until buf holds n bytes or the stream has ended.
func (z *zipReader) fill(n int) error {
	for len(z.buf) < n && !z.eof {
		more := make([]byte, max(n-len(z.buf), 64<<10))
		got, err := io.ReadAtLeast(z.r, more, n-len(z.buf))
		z.buf = append(z.buf, more[:got]...)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			z.eof = true
		} else if err != nil {
			return streamEnd(err)
		}
	}
	return nil
}

// take removes up to n bytes from the front of buf; the caller may keep them.
func (z *zipReader) take(n int) []byte {
	n = min(n, len(z.buf))
	out := z.buf[:n:n]
	z.buf = z.buf[n:]
	return out
}

// Read reads the stream after what has been taken: the read-ahead first.
func (z *zipReader) Read(p []byte) (int, error) {
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
