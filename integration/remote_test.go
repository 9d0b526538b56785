package integration

// In front of a bucket: push and pull, mounts with --remote sharing
// checkpoints through a real MinIO server, and the bucket as untrusted input.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// chunkObjects lists the chunk objects in the bucket.
func (s *minioServer) chunkObjects() []string {
	var keys []string
	for o := range s.client().ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: "team/chunks/"}) {
		if o.Err == nil {
			keys = append(keys, o.Key)
		}
	}
	return keys
}

// corrupt flips a bit in the last byte of object key.
func (s *minioServer) corrupt(key string) {
	s.t.Helper()
	ctx, c := context.Background(), s.client()
	obj, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	data, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		s.t.Fatal(err)
	}
	data[len(data)-1] ^= 0x40
	if _, err := c.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// TestRemotePushPull: a checkpoint pushed from one store and pulled into another
// is bit-identical; pushing again moves nothing; a pull never overwrites.
func TestRemotePushPull(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	ck := genHFCheckpoint(t, t.TempDir(), 2, 6, 256<<10, 21)
	a, b := newStore(t), newStore(t)
	mustCkptfs(t, a, "import", ck.dir, "run/ck")
	out := mustCkptfs(t, a, append([]string{"push", "run/ck"}, s.remote()...)...)
	if !strings.Contains(out, "push run/ck: 5 files") {
		t.Fatalf("push: %s", out)
	}
	if out := mustCkptfs(t, a, append([]string{"push", "run/ck"}, s.remote()...)...); !strings.Contains(out, " 0 of ") {
		t.Fatalf("second push moved chunks: %s", out)
	}
	mustCkptfs(t, b, append([]string{"pull", "run/ck"}, s.remote()...)...)
	exported := filepath.Join(t.TempDir(), "ck")
	mustCkptfs(t, b, "export", "run/ck", exported)
	sameTrees(t, ck.dir, exported)
	fsckClean(t, b)

	if out, err := ckptfs(t, b, append([]string{"pull", "run/ck"}, s.remote()...)...); err == nil || !strings.Contains(out, "already in the store") {
		t.Fatalf("pull over an existing checkpoint: %v %s", err, out)
	}
	if out, err := ckptfs(t, b, append([]string{"pull", "nothing"}, s.remote()...)...); err == nil || !strings.Contains(out, `no checkpoint "nothing"`) {
		t.Fatalf("pull of a missing checkpoint: %v %s", err, out)
	}
}

// TestRemotePushAcrossServerCrash: MinIO killed during a push fails the push and
// publishes nothing; after a restart the push completes without sending
// again what had arrived, and the pull is bit-identical.
func TestRemotePushAcrossServerCrash(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	ck := genHFCheckpoint(t, t.TempDir(), 2, 20, 1<<20, 22) // ~80 MB, ~80 chunks
	a, b := newStore(t), newStore(t)
	mustCkptfs(t, a, "import", ck.dir, "ck")

	push := exec.Command(ckptfsBin, append([]string{"--store", a, "push", "ck"}, s.remote()...)...)
	var out bytes.Buffer
	push.Stdout, push.Stderr = &out, &out
	if err := push.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); len(s.chunkObjects()) < 5; {
		if time.Now().After(deadline) {
			push.Process.Kill()
			t.Fatalf("no chunks arrived: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	done := make(chan error, 1)
	go func() { done <- push.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("push succeeded with the server killed: %s", out.String())
		}
	case <-time.After(3 * time.Minute):
		push.Process.Kill()
		t.Fatal("push hung after the server died")
	}
	t.Logf("push with the server killed: %s", strings.TrimSpace(out.String()))

	s.start()
	arrived := len(s.chunkObjects())
	if o, err := ckptfs(t, b, append([]string{"pull", "ck"}, s.remote()...)...); err == nil || !strings.Contains(o, "no checkpoint") {
		t.Fatalf("half a push is visible: %v %s", err, o)
	}
	res := mustCkptfs(t, a, append([]string{"push", "ck"}, s.remote()...)...)
	var moved, total int
	if _, err := fmt.Sscanf(res[strings.Index(res, "; ")+2:], "%d of %d chunks", &moved, &total); err != nil || moved+arrived > total+transferSlack {
		t.Fatalf("resumed push %q after %d chunks arrived: %v", res, arrived, err)
	}
	mustCkptfs(t, b, append([]string{"pull", "ck"}, s.remote()...)...)
	exported := filepath.Join(t.TempDir(), "ck")
	mustCkptfs(t, b, "export", "ck", exported)
	sameTrees(t, ck.dir, exported)
}

// transferSlack: chunks in flight when the server died may have arrived
// without the push knowing.
const transferSlack = 8

// TestRemotePullRejectsCorruptChunk: a chunk object changed in the bucket fails
// the pull with an error naming it; nothing is added to the store.
func TestRemotePullRejectsCorruptChunk(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	ck := genHFCheckpoint(t, t.TempDir(), 1, 4, 256<<10, 23)
	a, b := newStore(t), newStore(t)
	mustCkptfs(t, a, "import", ck.dir, "ck")
	mustCkptfs(t, a, append([]string{"push", "ck"}, s.remote()...)...)

	keys := s.chunkObjects()
	if len(keys) == 0 {
		t.Fatal("no chunk objects")
	}
	s.corrupt(keys[0])
	hash := filepath.Base(keys[0])
	out, err := ckptfs(t, b, append([]string{"pull", "ck"}, s.remote()...)...)
	if err == nil || !strings.Contains(out, hash[:12]) || !strings.Contains(out, "corrupt") {
		t.Fatalf("pull of a corrupt chunk %s: %v %s", hash[:12], err, out)
	}
	if ls := mustCkptfs(t, b, "ls"); strings.Contains(ls, "ck") {
		t.Fatalf("a failed pull left %s", ls)
	}
	fsckClean(t, b)
}

// Mounts in front of a bucket: each with a store of its own as its cache,
// as on separate nodes.

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
	a := s.mountRemote(t, raceBin, newStore(t)) // uploads in the background while the server dies
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

// putManifest publishes a manifest object under name, as another node (or
// anyone who can write the bucket) might.
func (s *minioServer) putManifest(name string, m map[string]any) {
	s.t.Helper()
	js, _ := json.Marshal(m)
	key := "team/checkpoints/" + name
	if _, err := s.client().PutObject(context.Background(), bucket, key, bytes.NewReader(js), int64(len(js)), minio.PutObjectOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// manifest reads the manifest object of name as generic JSON.
func (s *minioServer) manifest(name string) map[string]any {
	s.t.Helper()
	o, err := s.client().GetObject(context.Background(), bucket, "team/checkpoints/"+name, minio.GetObjectOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	var m map[string]any
	if err := json.NewDecoder(o).Decode(&m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

// TestRemoteBucketIsUntrusted: what a bucket holds is checked like a user's
// file. Manifests naming "..", overlong names, FIFOs or sizes their chunks
// do not add up to are not imported, and the mount stays up; set-user-ID
// bits from another node are cleared; push honours another store's lease;
// a re-import of a checkpoint under an open writer fails that writer's
// close instead of dropping its writes silently.
func TestRemoteBucketIsUntrusted(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"v":1}`), 0o644)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	a, b := newStore(t), newStore(t)
	mustCkptfs(t, a, "import", src, "ck")
	mustCkptfs(t, a, append([]string{"push", "ck"}, s.remote()...)...)

	// Push honours leases: b has its own ck and may not publish over a's.
	mustCkptfs(t, b, "import", src, "ck")
	if out, err := ckptfs(t, b, append([]string{"push", "ck"}, s.remote()...)...); err == nil || !strings.Contains(out, "written by another") {
		t.Fatalf("push over another store's checkpoint: %v %s", err, out)
	}
	mustCkptfs(t, a, append([]string{"push", "ck"}, s.remote()...)...) // control: the holder may

	// Hostile manifests, each a variation of a's real one.
	variant := func(name string, edit func(entries []any)) {
		m := s.manifest("ck")
		m["name"] = name
		edit(m["entries"].([]any))
		s.putManifest(name, m)
	}
	entry := func(es []any, path string) map[string]any {
		for _, e := range es {
			if e.(map[string]any)["path"] == path {
				return e.(map[string]any)
			}
		}
		t.Fatalf("no entry %q", path)
		return nil
	}
	variant("dotdot", func(es []any) { entry(es, "config.json")["path"] = "../../escape" })
	variant("longname", func(es []any) { entry(es, "config.json")["path"] = strings.Repeat("n", 300) })
	variant("fifo", func(es []any) { entry(es, "config.json")["Mode"] = float64(0o010644) })
	variant("lyingsize", func(es []any) { entry(es, "config.json")["Content"].(map[string]any)["Size"] = float64(1 << 40) })
	variant("suid", func(es []any) { entry(es, "run.sh")["Mode"] = float64(0o104755) })

	c := s.mountRemote(t, raceBin, newStore(t)) // refreshes while a writer has a file open
	waitFor(t, "the valid manifest imported", 30*time.Second, func() bool { _, err := os.Stat(c.path("suid")); return err == nil })
	for _, name := range []string{"dotdot", "longname", "fifo", "lyingsize"} {
		if _, err := os.Stat(c.path(name)); err == nil {
			t.Errorf("a manifest with %s was imported", name)
		}
	}
	if st, err := os.Stat(c.path("suid", "run.sh")); err != nil || st.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || st.Mode().Perm() != 0o755 {
		t.Errorf("run.sh of another node, published set-uid: %v %v", st.Mode(), err)
	}
	if got, err := os.ReadFile(c.path("ck", "config.json")); err != nil || string(got) != `{"v":1}` {
		t.Fatalf("the good checkpoint beside the hostile ones: %q %v", got, err)
	}
	log, _ := os.ReadFile(filepath.Join(c.store, "ckptfs.log"))
	for _, want := range []string{"../../escape", "a name of 300 bytes", "not a file, folder or symlink", "chunks add to"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("the log does not say why a manifest was refused: %q", want)
		}
	}

	// A writer in ck on c while a publishes a new version: c's copy is
	// replaced, and the writer's close says its writes were not kept.
	f, err := os.OpenFile(c.path("ck", "config.json"), os.O_WRONLY, 0) // no O_TRUNC: nothing commits before the close
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.store, "ckptfs.log"))
		t.Fatalf("%v\n%s", err, log)
	}
	f.Write([]byte(`{"v":"local"}`))
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"v":2}`), 0o644)
	mustCkptfs(t, a, "rm", "ck")
	mustCkptfs(t, a, "import", src, "ck")
	mustCkptfs(t, a, append([]string{"push", "ck"}, s.remote()...)...)
	waitFor(t, "the new version of ck on the other mount", 30*time.Second, func() bool {
		got, _ := exec.Command("cat", c.path("ck", "config.json")).Output()
		return string(got) == `{"v":2}`
	})
	if err := f.Close(); err == nil {
		t.Error("close of writes to a checkpoint replaced from the bucket returned success")
	}
	if got, _ := os.ReadFile(c.path("ck", "config.json")); string(got) != `{"v":2}` {
		t.Errorf("after the refused close: %q, want the published version", got)
	}
}

// TestRemoteCredentialsFromSharedFile: with no AWS variables, as under fstab,
// credentials come from ~/.aws/credentials or --remote-credentials with a
// profile. The control with none anywhere fails, so the others are not
// passing on credentials from somewhere else. AWS_EC2_METADATA_DISABLED
// keeps the chain off the instance-metadata address.
func TestRemoteCredentialsFromSharedFile(t *testing.T) {
	t.Parallel() // waits on MinIO and the daemons, beside the other such tests
	s := startMinio(t)
	store := newStore(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "config.json"), []byte("{}"), 0o644)
	mustCkptfs(t, store, "import", src, "ck")
	file := "[default]\naws_access_key_id = " + minioUser + "\naws_secret_access_key = " + minioSecret +
		"\n[train]\naws_access_key_id = " + minioUser + "\naws_secret_access_key = " + minioSecret + "\n"
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".aws"), 0o700)
	os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte(file), 0o600)
	elsewhere := filepath.Join(t.TempDir(), "aws-credentials")
	os.WriteFile(elsewhere, []byte(file), 0o600)
	push := func(home string, extra ...string) (string, error) {
		cmd := exec.Command(ckptfsBin, append(append([]string{"--store", store, "push", "ck"}, s.remote()...), extra...)...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") && !strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") &&
				!strings.HasPrefix(kv, "AWS_SESSION_TOKEN=") && !strings.HasPrefix(kv, "HOME=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "HOME="+home, "AWS_EC2_METADATA_DISABLED=true")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := push(t.TempDir()); err == nil {
		t.Fatalf("control: a push with no credentials anywhere succeeded: %s", out)
	}
	if out, err := push(home); err != nil {
		t.Errorf("credentials from ~/.aws/credentials: %v %s", err, out)
	}
	if out, err := push(t.TempDir(), "--remote-credentials", elsewhere, "--remote-profile", "train"); err != nil {
		t.Errorf("credentials from --remote-credentials with a profile: %v %s", err, out)
	}
}
