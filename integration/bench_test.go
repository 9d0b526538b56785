package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/storetest"
)

// TestBenchRemote is 'make bench-remote', skipped otherwise: a checkpoint
// saved into and loaded from mounts in front of a MinIO bucket on this
// machine, side by side with the same work on local disk. It prints a
// table and writes it to integration/bench/out/remote.md.
func TestBenchRemote(t *testing.T) {
	if os.Getenv("CKPTFS_BENCH_REMOTE") == "" {
		t.Skip("benchmark: make bench-remote runs it")
	}
	gib, _ := strconv.ParseFloat(os.Getenv("CKPTFS_BENCH_GIB"), 64)
	if gib <= 0 {
		gib = 2
	}
	// 8 MiB bf16 tensors, 32 to a shard.
	tensors := int(gib * 128)
	src := genHFCheckpoint(t, t.TempDir(), (tensors+31)/32, 32, 4<<20, 7).dir
	size := storetest.TreeBytes(t, src)
	s := startMinio(t)
	var rows []string
	row := func(metric string, secs, localSecs float64) {
		ours, local := float64(size)/secs/1e6, float64(size)/localSecs/1e6
		r := fmt.Sprintf("| %s | %.0f | %.0f | %.2f |", metric, ours, local, ours/local)
		t.Log(r)
		rows = append(rows, r)
	}
	timed := func(name string, args ...string) float64 {
		start := time.Now()
		run(t, name, args...)
		return time.Since(start).Seconds()
	}
	sync := func() { run(t, "sync") }
	dropCaches := func() {
		sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644); err != nil {
			t.Fatalf("drop caches (run as root): %v", err)
		}
	}

	local := filepath.Join(t.TempDir(), "ck")
	dropCaches()
	localWrite := timed("sh", "-c", fmt.Sprintf("cp -r %s %s && sync", src, local))
	a := s.mountRemote(t, plainBin, newStore(t))
	dropCaches()
	row("save: cp -r into the mount; each close waits for the bucket", timed("cp", "-r", src, a.path("ck")), localWrite)
	a.unmount()

	dropCaches()
	localRead := timed("sh", "-c", "cat $(find "+local+" -type f) >/dev/null")
	b := s.mountRemote(t, plainBin, newStore(t))
	dropCaches()
	row("cold load from the bucket (empty cache), all files", timed("sh", "-c", "cat $(find "+b.path("ck")+" -type f) >/dev/null"), localRead)
	b.unmount()
	b = s.mountRemote(t, plainBin, b.store)
	dropCaches()
	row("load from the local cache (remounted, page cache dropped)", timed("sh", "-c", "cat $(find "+b.path("ck")+" -type f) >/dev/null"), localRead)
	b.unmount()
	c := s.mountRemote(t, plainBin, newStore(t))
	dropCaches()
	row("cold load from the bucket, @single view", timed("sh", "-c", "cat "+c.path("ck@single", "model.safetensors")+" >/dev/null"), localRead)
	c.unmount()
	pullStore := newStore(t)
	dropCaches()
	row("reference: ckptfs pull of the checkpoint (8 GETs at a time)",
		timed(plainBin, append([]string{"--store", pullStore, "pull", "ck"}, s.remote()...)...), localRead)

	table := fmt.Sprintf("%.1f GiB of bf16 safetensors (%d shards), MinIO on 127.0.0.1 with its data on the same disk; MB/s.\n\n", float64(size)/(1<<30), (tensors+31)/32) +
		"| | ckptfs | local disk | ratio |\n|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	fmt.Print(table)
	if err := os.WriteFile("bench/out/remote.md", []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
}
