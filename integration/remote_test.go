package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	minioUser   = "ckptfs-test"
	minioSecret = "ckptfs-test-secret"
	bucket      = "ckpt"
)

// minioServer is a real MinIO server on 127.0.0.1, started by the test
// from the binary 'make minio' builds, on a data folder of its own.
type minioServer struct {
	t    *testing.T
	bin  string
	data string
	addr string
	cmd  *exec.Cmd
}

// startMinio starts MinIO with an empty bucket, and sets the AWS variables
// of this process (which ckptfs inherits) to its credentials.
func startMinio(t *testing.T) *minioServer {
	bin := os.Getenv("CKPTFS_MINIO")
	if bin == "" {
		home, _ := os.UserHomeDir()
		bin = filepath.Join(home, ".cache", "ckptfs", "bin", "minio")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CKPTFS_REQUIRE_MINIO") != "" {
			t.Fatalf("MinIO server %s: %v (make minio builds it)", bin, err)
		}
		t.Skipf("no MinIO server at %s: run make minio", bin)
	}
	s := &minioServer{t: t, bin: bin, data: t.TempDir(), addr: freeAddr(t)}
	s.start()
	t.Cleanup(s.stop)
	// The same for every server, so tests with servers of their own run in
	// parallel (t.Setenv would forbid it); each names its endpoint.
	os.Setenv("AWS_ACCESS_KEY_ID", minioUser)
	os.Setenv("AWS_SECRET_ACCESS_KEY", minioSecret)
	os.Setenv("AWS_REGION", "us-east-1")
	os.Setenv("AWS_MAX_ATTEMPTS", "3") // a dead server fails a request in seconds, not half a minute
	if err := s.client().MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	return s
}

func (s *minioServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "server", s.data, "--address", s.addr, "--console-address", freeAddr(s.t), "--quiet")
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioSecret)
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	// A server that says it is ready may still be initializing its object
	// layer, and answers S3 calls so ("Server not initialized yet"), also
	// after a restart: ready is when a listing goes through.
	for i := 0; i < 300; i++ {
		if resp, err := http.Get("http://" + s.addr + "/minio/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				_, err := s.client().ListBuckets(context.Background())
				if err == nil {
					return
				}
				if !strings.Contains(err.Error(), "not initialized") {
					s.stop()
					s.t.Fatalf("MinIO: %v", err)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	s.t.Fatal("MinIO did not become ready in 30 s")
}

// stop kills the server by its pid, as a crash would.
func (s *minioServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

func (s *minioServer) client() *minio.Client {
	c, err := minio.New(s.addr, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioSecret, "")})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// remote are the flags naming the test bucket.
func (s *minioServer) remote() []string {
	return []string{"--remote", "s3://" + bucket + "/team", "--remote-endpoint", "http://" + s.addr}
}

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

// TestPushPull: a checkpoint pushed from one store and pulled into another
// is bit-identical; pushing again moves nothing; a pull never overwrites.
func TestPushPull(t *testing.T) {
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

// TestPushAcrossServerCrash: MinIO killed during a push fails the push and
// publishes nothing; after a restart the push completes without sending
// again what had arrived, and the pull is bit-identical.
func TestPushAcrossServerCrash(t *testing.T) {
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

// TestPullRejectsCorruptChunk: a chunk object changed in the bucket fails
// the pull with an error naming it; nothing is added to the store.
func TestPullRejectsCorruptChunk(t *testing.T) {
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
