package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

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

// TestBucketIsUntrusted: what a bucket holds is checked like a user's
// file. Manifests naming "..", overlong names, FIFOs or sizes their chunks
// do not add up to are not imported, and the mount stays up; set-user-ID
// bits from another node are cleared; push honours another store's lease;
// a re-import of a checkpoint under an open writer fails that writer's
// close instead of dropping its writes silently.
func TestBucketIsUntrusted(t *testing.T) {
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

	c := s.mountRemote(t, ckptfsBin, newStore(t))
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

// TestCredentialsFromSharedFile: with no AWS variables, as under fstab,
// credentials come from ~/.aws/credentials or --remote-credentials with a
// profile. The control with none anywhere fails, so the others are not
// passing on credentials from somewhere else. AWS_EC2_METADATA_DISABLED
// keeps the chain off the instance-metadata address.
func TestCredentialsFromSharedFile(t *testing.T) {
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
