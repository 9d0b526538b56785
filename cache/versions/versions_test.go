package versions_test

import (
	"bytes"
	"path"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/ckptfs/ckptfs/cache/versions"
	"github.com/ckptfs/ckptfs/layout/layouttest"
)

// save stores data as the file at p, its folders made as needed, with
// mtime at, as a save into the mount leaves it: named first, its content
// settled after.
func save(t *testing.T, s *store.Store, p string, data []byte, at time.Time) *meta.Inode {
	t.Helper()
	ns := s.Namespace()
	dir, err := ns.MkdirAll(path.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	in, err := ns.Create(dir, path.Base(p), meta.Inode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	c, release, err := s.Ingest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	in, err = ns.Update(in.Ino, func(in *meta.Inode) error { in.Content, in.Mtime = *c, at.UnixNano(); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// deltas counts the chunks of in stored as deltas.
func deltas(s *store.Store, in *meta.Inode) int {
	n := 0
	for _, c := range in.Content.Chunks {
		if _, ok, _ := s.DeltaOf(c.Hash); ok {
			n++
		}
	}
	return n
}

// waitFor polls cond for two minutes: the encoder runs at nice 19, and
// under make test (fuzzers and suites side by side on two cores, -race)
// one round of 60 KB took 11 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2 minutes", what)
		}
	}
}

// Checkpoints saved into sibling folders, as a trainer saves them, are
// found without being named: each older version's tensors become deltas
// against the version saved after it, one folder deeper too, and the
// newest stays whole; a file of another name is no version of it. Every
// version reads back as saved.
func TestSiblingFoldersAreVersions(t *testing.T) {
	s := storetest.Open(t, store.Options{Mounted: true})
	e := versions.Start(s, versions.Options{Quiet: 10 * time.Millisecond})
	defer e.Close()
	s.FollowRecords(e.Changed)

	run := layouttest.TrainingRun(1, 4, 2, 30_000, 1e-4)
	other := layouttest.TrainingRun(2, 2, 2, 30_000, 1e-4)
	t0 := time.Now().Add(-time.Hour)
	var flat, deep []*meta.Inode
	for i, data := range run[:3] {
		at := t0.Add(time.Duration(i) * time.Minute)
		dir := "run/checkpoint-" + string(rune('1'+i))
		flat = append(flat, save(t, s, dir+"/model.safetensors", data, at))
		deep = append(deep, save(t, s, dir+"/model/shard-1.safetensors", data, at))
	}
	otherOld := save(t, s, "run/checkpoint-1/other.safetensors", other[0], t0)
	save(t, s, "run/checkpoint-9/other.safetensors", other[1], t0.Add(time.Hour))
	save(t, s, "run/checkpoint-9/renamed.safetensors", run[3], t0.Add(time.Hour))
	for _, files := range [][]*meta.Inode{flat, deep} {
		waitFor(t, "the older versions stored as deltas", func() bool {
			return deltas(s, files[0]) == 2 && deltas(s, files[1]) == 2
		})
		if n := deltas(s, files[2]); n != 0 {
			t.Errorf("the newest version has %d deltas", n)
		}
		for i, in := range files {
			if got := storetest.ReadAll(t, s, &in.Content); !bytes.Equal(got, run[i]) {
				t.Errorf("version %d reads back otherwise", i)
			}
		}
	}
	waitFor(t, "the other file's older version stored as deltas", func() bool { return deltas(s, otherOld) == 2 })
	if n := deltas(s, flat[2]); n != 0 {
		t.Errorf("a file of another name made the newest version %d deltas", n)
	}
	if r, ok, _ := s.DeltaOf(flat[0].Content.Chunks[1].Hash); !ok || r != flat[1].Content.Chunks[1].Hash {
		t.Errorf("the oldest version's tensor is a delta against %v, want the next version's", r)
	}
}

// Pairs pairs the chunks holding the same byte range, where they differ.
func TestPairs(t *testing.T) {
	run := layouttest.TrainingRun(1, 2, 2, 30_000, 1e-4)
	s := storetest.Open(t, store.Options{})
	a := storetest.AddFile(t, s, "a", run[0])
	b := storetest.AddFile(t, s, "b", run[1])
	ps := versions.Pairs(a, b)
	if len(ps) != 2 {
		t.Fatalf("%d pairs, want the 2 tensors'", len(ps))
	}
	for _, p := range ps {
		if p.Chunk == p.Ref {
			t.Error("a chunk paired with itself")
		}
	}
	shifted := storetest.AddFile(t, s, "c", append([]byte{0}, run[1]...))
	if ps := versions.Pairs(a, shifted); len(ps) != 0 {
		t.Errorf("%d pairs of chunks at other offsets", len(ps))
	}
}

// Versions that settle out of order (a later one chunked before an
// earlier one is) still pair with their neighbours: each becomes deltas
// against the version saved just after it, never one further on.
func TestVersionsSettlingOutOfOrder(t *testing.T) {
	s := storetest.Open(t, store.Options{Mounted: true})
	e := versions.Start(s, versions.Options{Quiet: 10 * time.Millisecond})
	defer e.Close()
	s.FollowRecords(e.Changed)
	ns := s.Namespace()

	run := layouttest.TrainingRun(3, 3, 2, 30_000, 1e-4)
	t0 := time.Now().Add(-time.Hour)
	first := save(t, s, "run/step1/model.safetensors", run[0], t0)
	dir, err := ns.MkdirAll("run/step2")
	if err != nil {
		t.Fatal(err)
	}
	staged, err := ns.Create(dir, "model.safetensors", meta.Inode{Mode: syscall.S_IFREG | 0o644, Mtime: t0.Add(time.Minute).UnixNano(),
		Content: meta.Content{Size: int64(len(run[1])), Staged: 1}})
	if err != nil {
		t.Fatal(err)
	}
	last := save(t, s, "run/step3/model.safetensors", run[2], t0.Add(2*time.Minute))
	time.Sleep(200 * time.Millisecond) // the encoder looks while step2 is staged
	c, release, err := s.Ingest(bytes.NewReader(run[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	middle, err := ns.Update(staged.Ino, func(in *meta.Inode) error { in.Content = *c; return nil })
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both older versions stored as deltas", func() bool { return deltas(s, first) == 2 && deltas(s, middle) == 2 })
	for i := 1; i < 3; i++ {
		if r, _, _ := s.DeltaOf(first.Content.Chunks[i].Hash); r != middle.Content.Chunks[i].Hash {
			t.Errorf("the first version's tensor %d is a delta against another than the next version", i)
		}
		if r, _, _ := s.DeltaOf(middle.Content.Chunks[i].Hash); r != last.Content.Chunks[i].Hash {
			t.Errorf("the middle version's tensor %d is a delta against another than the last version", i)
		}
	}
}
