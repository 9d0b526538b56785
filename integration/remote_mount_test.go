package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
	"github.com/minio/minio-go/v7"
)

// Mounts in front of a bucket: each with a store of its own as its cache,
// as on separate nodes.

// mountRemote mounts store in front of the test bucket, looking for other
// mounts' checkpoints every second.
func (s *minioServer) mountRemote(t *testing.T, bin, store string, extra ...string) *mount {
	t.Helper()
	return mountStoreWith(t, bin, store, append(append(s.remote(), "--remote-ttl", "1s"), extra...)...)
}

// sameFileList reports whether two trees hold the same names and sizes.
func sameFileList(a, b string) bool {
	list := func(root string) map[string]int64 {
		out := map[string]int64{}
		filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err == nil {
				out[strings.TrimPrefix(p, root)] = info.Size()
			}
			return nil
		})
		return out
	}
	la, lb := list(a), list(b)
	if len(la) != len(lb) {
		return false
	}
	for k, v := range la {
		if lb[k] != v {
			return false
		}
	}
	return true
}

// runPython runs integration/python/remote_minilm.py with the test venv.
func runPython(t *testing.T, args ...string) string {
	t.Helper()
	py := os.Getenv("CKPTFS_PYTHON")
	if py == "" {
		if os.Getenv("CKPTFS_REQUIRE_MINIO") != "" {
			t.Fatal("CKPTFS_PYTHON is not set: make integration sets it to the venv's python")
		}
		t.Skip("CKPTFS_PYTHON is not set: run make integration")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"python/remote_minilm.py"}, args...)...)
	cmd.Env = append(os.Environ(), "HF_HUB_OFFLINE=1", "HF_HUB_DISABLE_PROGRESS_BARS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("remote_minilm.py %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRemoteMountsShareMiniLM: MiniLM saved through one mount loads
// through another, with its own cache, bit for bit; the second mount cannot
// write the first one's checkpoint or take a name it holds; removing the
// checkpoint removes it everywhere.
func TestRemoteMountsShareMiniLM(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	a := s.mountRemote(t, ckptfsBin, newStore(t))
	b := s.mountRemote(t, ckptfsBin, newStore(t))

	runPython(t, "save", a.path("minilm"))
	waitFor(t, "the second mount to show minilm", time.Minute, func() bool { return sameFileList(a.path("minilm"), b.path("minilm")) })
	sameTrees(t, a.path("minilm"), b.path("minilm"))
	t.Log(strings.TrimSpace(runPython(t, "check", b.path("minilm"), b.path("minilm@single"))))

	// One writer per checkpoint.
	if err := os.WriteFile(b.path("minilm", "notes.txt"), []byte("from b"), 0o644); err == nil {
		t.Fatal("a second mount wrote into the checkpoint of the first without an error")
	}
	if err := os.Mkdir(a.path("run2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(b.path("run2"), 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second mount made a checkpoint name the first holds: %v", err)
	}
	time.Sleep(2 * time.Second) // two refreshes
	if _, err := os.Stat(a.path("minilm", "notes.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused write reached the first mount: %v", err)
	}

	if err := os.RemoveAll(a.path("minilm")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removal to reach the second mount", time.Minute, func() bool {
		_, err := os.Stat(b.path("minilm"))
		return errors.Is(err, os.ErrNotExist)
	})
	a.unmount()
	b.unmount()
	fsckClean(t, a.store)
	fsckClean(t, b.store)
}

// TestRemoteUploadAcrossServerCrash: the bucket's server killed while a
// file is written fails the writer's close; no manifest in the bucket ever
// names a chunk it lacks; once the server is back the mount publishes the
// file, and another mount reads it bit for bit.
func TestRemoteUploadAcrossServerCrash(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	a := s.mountRemote(t, ckptfsBin, newStore(t))
	b := s.mountRemote(t, ckptfsBin, newStore(t))
	src := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(src, storetest.Random(31, 96<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(a.path("ck"), 0o755); err != nil {
		t.Fatal(err)
	}
	cp := exec.Command("cp", src, a.path("ck", "big"))
	cpOut := &strings.Builder{}
	cp.Stdout, cp.Stderr = cpOut, cpOut
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "chunks to arrive", time.Minute, func() bool { return len(s.chunkObjects()) >= 5 })
	s.stop()
	if err := cp.Wait(); err == nil {
		t.Fatal("cp into the mount succeeded with the bucket's server killed")
	}
	t.Logf("cp with the server killed: %s", strings.TrimSpace(cpOut.String()))
	if got, want := fileHash(t, a.path("ck", "big")), fileHash(t, src); got != want {
		t.Fatal("the writing mount lost the file it could not publish")
	}

	s.start()
	s.manifestsComplete()
	waitFor(t, "the file to be published and imported", time.Minute, func() bool {
		st, err := os.Stat(b.path("ck", "big"))
		return err == nil && st.Size() == 96<<20
	})
	s.manifestsComplete()
	want := fileHash(t, src)
	if got := fileHash(t, b.path("ck", "big")); got != want {
		t.Fatal("the published file reads back different")
	}

	// The reader's cache survives a remount: nothing is fetched again.
	b.unmount()
	addr := freeAddr(t)
	b = s.mountRemote(t, ckptfsBin, b.store, "--metrics-addr", addr)
	if got := fileHash(t, b.path("ck", "big")); got != want {
		t.Fatal("the file reads back different after a remount")
	}
	if n, ok := scrape(t, addr)["ckptfs_bucket_fetched_bytes_total"]; !ok || n != 0 {
		t.Fatalf("a remounted cache fetched %v bytes again (reported: %v)", n, ok)
	}
}

// manifestsComplete fails the test if a checkpoint manifest in the bucket
// names a chunk object that is not there.
func (s *minioServer) manifestsComplete() {
	s.t.Helper()
	ctx, c := context.Background(), s.client()
	chunks := map[string]bool{}
	for _, k := range s.chunkObjects() {
		chunks[filepath.Base(k)] = true
	}
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "team/checkpoints/", Recursive: true}) {
		if o.Err != nil {
			s.t.Fatal(o.Err)
		}
		obj, err := c.GetObject(ctx, bucket, o.Key, minio.GetObjectOptions{})
		if err != nil {
			s.t.Fatal(err)
		}
		var m struct {
			Entries []struct {
				Path    string
				Content struct{ Chunks []struct{ Hash string } }
			} `json:"entries"`
		}
		err = json.NewDecoder(obj).Decode(&m)
		obj.Close()
		if err != nil {
			s.t.Fatalf("manifest %s: %v", o.Key, err)
		}
		for _, e := range m.Entries {
			for _, ch := range e.Content.Chunks {
				if !chunks[ch.Hash] {
					s.t.Fatalf("manifest %s names chunk %s of %s, which the bucket lacks", o.Key, ch.Hash, e.Path)
				}
			}
		}
	}
}

// TestRemoteEvictionUnder64MiB: mounts with 64 MiB of local cache write and
// read a 300 MB checkpoint, as written and through a view, bit for bit,
// and keep their packs near the bound.
func TestRemoteEvictionUnder64MiB(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests

	const limit, slack = 64 << 20, 8 << 20 // one pack is appended to past the bound
	ck := sharedHFCheckpoint(t)
	s := startMinio(t)
	a := s.mountRemote(t, plainBin, newStore(t), "--remote-cache-size", "64MiB")
	run(t, "cp", "-r", ck.dir, a.path("hf"))
	waitFor(t, "the writer's cache to shrink to 64 MiB", time.Minute, func() bool { return storetest.TreeBytes(t, filepath.Join(a.store, "packs")) <= limit+slack })
	a.unmount()

	b := s.mountRemote(t, plainBin, newStore(t), "--remote-cache-size", "64MiB")
	sameTrees(t, ck.dir, b.path("hf"))
	got := readSafetensors(t, b.path("hf@single", "model.safetensors"))
	if len(got) != len(ck.tensors) {
		t.Fatalf("@single holds %d tensors, want %d", len(got), len(ck.tensors))
	}
	for name, want := range ck.tensors {
		if string(got[name]) != string(want) {
			t.Fatalf("@single: tensor %s differs", name)
		}
	}
	waitFor(t, "the reader's cache to shrink to 64 MiB", time.Minute, func() bool { return storetest.TreeBytes(t, filepath.Join(b.store, "packs")) <= limit+slack })
	t.Logf("packs after reading 600 MB: writer %d MiB, reader %d MiB", storetest.TreeBytes(t, filepath.Join(a.store, "packs"))>>20, storetest.TreeBytes(t, filepath.Join(b.store, "packs"))>>20)
	b.unmount()
	if out := mustCkptfs(t, b.store, "fsck"); !strings.Contains(out, "held by the bucket only") {
		t.Fatalf("fsck of an evicting cache: %s", out)
	}
	mnt := t.TempDir()
	if out, err := ckptfs(t, b.store, "mount", mnt); err == nil || !strings.Contains(out, "is a cache of s3://"+bucket+"/team") {
		t.Fatalf("mount of a cache without its bucket: %v %s", err, out)
	}
}

// TestRemoteCorruptObjectIsEIO: a chunk object changed in the bucket fails
// the reads that need it with EIO; every other read is right.
func TestRemoteCorruptObjectIsEIO(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	ck := genHFCheckpoint(t, t.TempDir(), 1, 4, 256<<10, 24)
	a := s.mountRemote(t, plainBin, newStore(t))
	run(t, "cp", "-r", ck.dir, a.path("ck"))
	a.unmount()
	keys := s.chunkObjects()
	s.corrupt(keys[len(keys)/2])

	b := s.mountRemote(t, plainBin, newStore(t))
	want := treeHashes(t, ck.dir)
	var failed int
	for rel, hash := range want {
		data, err := os.ReadFile(b.path("ck", rel))
		switch {
		case errors.Is(err, syscall.EIO):
			failed++
		case err != nil:
			t.Fatalf("%s: %v, want EIO or the bytes", rel, err)
		case fileHashBytes(data) != hash:
			t.Fatalf("%s: wrong bytes served from a corrupt bucket", rel)
		}
	}
	if failed == 0 {
		t.Fatal("no read failed with a corrupt chunk in the bucket")
	}
	if log, _ := os.ReadFile(filepath.Join(b.store, "ckptfs.log")); !strings.Contains(string(log), filepath.Base(keys[len(keys)/2])[:12]) {
		t.Fatalf("the daemon log does not name the corrupt chunk:\n%s", log)
	}
}
