package ingest

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ckptfs/ckptfs/cache/chunk"
	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/layout/safetensors"
	"github.com/ckptfs/ckptfs/layout/torch"
	"github.com/ckptfs/ckptfs/layout/view"
	"github.com/restic/chunker"
)

// random is n bytes from a seeded generator, as storetest.Random, which
// ingest's own tests cannot import: storetest imports the store, which
// imports ingest.
func random(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// memPutter stores chunks in a map; Run calls it from all cores.
type memPutter struct {
	mu     sync.Mutex
	chunks map[chunk.Hash][]byte
}

func (m *memPutter) PutChunk(raw []byte, _ chunk.Hint) (chunk.Ref, error) {
	h := chunk.Sum(raw)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.chunks == nil {
		m.chunks = map[chunk.Hash][]byte{}
	}
	m.chunks[h] = append([]byte(nil), raw...)
	return chunk.Ref{Hash: h, Len: uint32(len(raw))}, nil
}

// join reads back what Run stored.
func (m *memPutter) join(r *meta.Content) []byte {
	var out []byte
	for _, c := range r.Chunks {
		out = append(out, m.chunks[c.Hash]...)
	}
	return out
}

// newBuffer is a fresh chunk buffer: the tests keep what they are given.
func newBuffer(n int) []byte { return make([]byte, n, chunk.MaxSize) }

type splitChunk struct {
	raw  []byte
	hint chunk.Hint
}

// splitAll runs the ingest splitter on data and checks that the chunks
// put back together are data and none is larger than chunk.MaxSize.
func splitAll(t testing.TB, data []byte) (meta.Kind, []splitChunk) {
	var chunks []splitChunk
	kind, err := split(bufio.NewReaderSize(bytes.NewReader(data), 1<<20), func(raw []byte, hint chunk.Hint, _ bool) error {
		chunks = append(chunks, splitChunk{raw, hint})
		return nil
	}, newBuffer)
	if err != nil {
		t.Fatal(err)
	}
	var joined []byte
	for _, c := range chunks {
		if len(c.raw) == 0 || len(c.raw) > chunk.MaxSize {
			t.Fatalf("chunk of %d bytes", len(c.raw))
		}
		joined = append(joined, c.raw...)
	}
	if !bytes.Equal(joined, data) {
		t.Fatalf("chunks join to %d bytes that differ from the %d input bytes", len(joined), len(data))
	}
	return kind, chunks
}

// floatTensorPickle is a torch.save data.pkl of {"w": tensor} where w is a
// float32 tensor of numel elements in storage "0".
func floatTensorPickle(numel uint32) []byte {
	n := binary.LittleEndian.AppendUint32(nil, numel)
	p := "\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n" +
		"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ" + string(n) + "tQK\x00J" + string(n) + "\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs."
	return []byte(p)
}

// torchLikeZip writes a torch.save-shaped archive around record, with data
// descriptors as torch writes them, or with sizes in the local headers.
func torchLikeZip(t testing.TB, record []byte, descriptors bool) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{{"arch/data.pkl", floatTensorPickle(uint32(len(record) / 4))}, {"arch/byteorder", []byte("little")}, {"arch/data/0", record}, {"arch/version", []byte("3\n")}} {
		var w interface{ Write([]byte) (int, error) }
		var err error
		if descriptors {
			w, err = zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Store})
		} else {
			w, err = zw.CreateRaw(&zip.FileHeader{Name: e.name, Method: zip.Store,
				CompressedSize64: uint64(len(e.data)), UncompressedSize64: uint64(len(e.data))})
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestZipSplitAtRecords: a storage record starts a chunk and is cut in
// chunk.MaxSize pieces from its first byte, with its dtype as hint, whether the
// entry sizes come from a data descriptor or from the local header.
func TestZipSplitAtRecords(t *testing.T) {
	record := random(3, 3*chunk.MaxSize+12)
	for _, descriptors := range []bool{true, false} {
		data := torchLikeZip(t, record, descriptors)
		if h, err := torch.Parse(bytes.NewReader(data), int64(len(data)), view.NewBudget(), &view.Warnings{}); err != nil || len(h.Tensors) != 1 {
			t.Fatalf("the test archive does not parse as torch.save: %v", err)
		}
		kind, chunks := splitAll(t, data)
		if kind != meta.KindZip {
			t.Fatalf("kind %d", kind)
		}
		var pieces int
		for _, c := range chunks {
			off := bytes.Index(record, c.raw)
			if c.hint == "F32" && off%chunk.MaxSize == 0 && (len(c.raw) == chunk.MaxSize || off+len(c.raw) == len(record)) {
				pieces++
			}
		}
		if pieces != 4 {
			t.Errorf("descriptors %v: %d of 4 record pieces aligned", descriptors, pieces)
		}
	}
}

// TestZipSplitSharesChunksWithSafetensors: the weights of a torch.save file
// and of the safetensors file of the same tensors are stored once.
func TestZipSplitSharesChunksWithSafetensors(t *testing.T) {
	stored := &memPutter{}
	ingest := func(name string) (*meta.Content, []byte) {
		data, err := os.ReadFile(filepath.Join("../../layout/torch/testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := Run(bytes.NewReader(data), stored)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stored.join(c), data) {
			t.Fatalf("%s: read back differs", name)
		}
		return c, data
	}
	bin, _ := ingest("state_dict.bin")
	_, st := ingest("state_dict.safetensors")
	if bin.Kind != meta.KindZip {
		t.Fatalf("kind %d", bin.Kind)
	}
	have := map[chunk.Hash]bool{}
	for _, c := range bin.Chunks {
		have[c.Hash] = true
	}
	h, err := safetensors.ParseFile(st, int64(len(st)))
	if err != nil {
		t.Fatal(err)
	}
	// Tensors that are a whole storage in the .bin; shared_view is a slice
	// of shared_whole's storage, so it has no chunk of its own there.
	shared := 0
	for _, x := range h.Tensors {
		if x.Len() > 0 && x.Name != "shared_view" {
			if have[chunk.Sum(st[h.DataStart+x.Begin:h.DataStart+x.End])] {
				shared++
			} else {
				t.Errorf("tensor %q of the safetensors file has no chunk in the .bin", x.Name)
			}
		}
	}
	if shared < 15 {
		t.Fatalf("only %d tensors shared", shared)
	}
}

// FuzzSplitZip: any input, the fixtures first (also run by go test), splits
// into chunks that join back to it.
func FuzzSplitZip(f *testing.F) {
	names, _ := filepath.Glob("../../layout/torch/testdata/*.bin")
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(torchLikeZip(f, random(1, 4096), true))
	f.Add(torchLikeZip(f, random(2, 4096), false))
	f.Fuzz(func(t *testing.T, data []byte) {
		splitAll(t, data)
	})
}

// countingReader counts what was read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// A stored zip of many entries of at most a piece each (zip -0, np.savez)
// goes out as it is read: the splitter never holds more than a piece of
// what lies between tensors, however long the archive.
func TestStoredZipOfSmallEntriesStreams(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range 48 {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("arr_%d.npy", i), Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(random(int64(i), chunk.MaxSize-100))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	in := &countingReader{r: bytes.NewReader(data)}
	var readAtFirst int64 = -1
	var out []byte
	_, err := split(bufio.NewReaderSize(in, 1<<20), func(raw []byte, _ chunk.Hint, _ bool) error {
		if readAtFirst < 0 {
			readAtFirst = in.n
		}
		out = append(out, raw...)
		return nil
	}, newBuffer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, data) {
		t.Fatal("the chunks do not make the archive")
	}
	if readAtFirst > 8<<20 {
		t.Fatalf("the first chunk went out after %d MiB of a %d MiB archive was read", readAtFirst>>20, len(data)>>20)
	}
}

// Opaque streams are cut by content whatever their length: one chunk
// below the smallest cut (read apart from the chunker), the same cuts as
// the chunker alone makes above it, and nothing for an empty stream.
func TestOpaqueStreamsOfAnyLength(t *testing.T) {
	for _, n := range []int{0, 1, 200, smallTail - 1, smallTail, smallTail + 1, cdcMin + 1, 5 << 20} {
		data := random(int64(n), n)
		var m memPutter
		c, err := Run(bytes.NewReader(data), &m)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.join(c); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %d", n, len(got))
		}
		var want []int
		ch := chunker.NewWithBoundaries(bytes.NewReader(data), cdcPolynomial, cdcMin, cdcMax)
		for {
			piece, err := ch.Next(nil)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int(piece.Length))
		}
		if len(c.Chunks) != len(want) {
			t.Fatalf("%d bytes: %d chunks, the chunker alone cuts %d", n, len(c.Chunks), len(want))
		}
		for i, r := range c.Chunks {
			if int(r.Len) != want[i] {
				t.Fatalf("%d bytes: chunk %d is %d bytes, the chunker's %d", n, i, r.Len, want[i])
			}
		}
	}
}
