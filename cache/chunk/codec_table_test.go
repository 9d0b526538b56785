package chunk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkCodecTable measures the chunk codecs on real inputs for make
// bench-codec: CKPTFS_CODEC_INPUTS names a file of "name dtype path"
// lines, and it appends one JSON object per input to CKPTFS_CODEC_OUT.
// Inputs are cut into MaxSize chunks as ingest does; each figure is one
// timed pass (run it with -benchtime=1x, and GOMAXPROCS=1 for single-core
// figures).
func BenchmarkCodecTable(b *testing.B) {
	list, out := TableFiles(b, "CKPTFS_CODEC_INPUTS", "CKPTFS_CODEC_OUT", "bench-codec")
	f, err := os.Open(list)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	c := NewCodecs()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		name, dtype, path := fields[0], fields[1], fields[2]
		raw, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		var chunks [][]byte
		for off := 0; off < len(raw); off += MaxSize {
			chunks = append(chunks, raw[off:min(off+MaxSize, len(raw))])
		}
		values := make([][]byte, len(chunks))
		start := time.Now()
		for i, ch := range chunks {
			values[i] = c.Encode(ch, Hint(dtype))
		}
		enc := time.Since(start)
		stored := 0
		for _, v := range values {
			stored += len(v)
		}
		start = time.Now()
		for i, v := range values {
			if _, err := c.decode(nil, CodecID(v[0]), v[HeaderLen:], len(chunks[i])); err != nil {
				b.Fatal(err)
			}
		}
		dec := time.Since(start)
		hashes := make([]Hash, len(chunks))
		for i, ch := range chunks {
			hashes[i] = Sum(ch)
		}
		start = time.Now()
		for i, v := range values {
			got, err := c.Decode(hashes[i], v) // checks the hash of what it decodes
			if err != nil || !bytes.Equal(got, chunks[i]) {
				b.Fatalf("%s: chunk %d does not round-trip: %v", name, i, err)
			}
		}
		verified := time.Since(start)
		mbs := func(d time.Duration) float64 { return float64(len(raw)) / d.Seconds() / 1e6 }
		json.NewEncoder(out).Encode(map[string]any{
			"input": name, "dtype": dtype, "bytes": len(raw), "ratio": float64(stored) / float64(len(raw)),
			"compress_mbs": mbs(enc), "decompress_mbs": mbs(dec), "decompress_verify_mbs": mbs(verified), // with CRC, BLAKE3 and a compare
			"roundtrip": true,
		})
	}
}

// TableFiles starts a table test of make target: it skips the test unless
// the variable inputs names its inputs, and opens the file the variable
// out names, for the test to append its rows to (closed with the test).
func TableFiles(t testing.TB, inputs, out, target string) (string, *os.File) {
	list := os.Getenv(inputs)
	if list == "" {
		t.Skipf("%s not set: run make %s", inputs, target)
	}
	f, err := os.OpenFile(os.Getenv(out), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return list, f
}
