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

// BenchmarkRemote is 'make bench-remote': a checkpoint saved into and
// loaded from mounts in front of a MinIO bucket on this machine, side by
// side with the same work on local disk. Each row is one timed pass over
// the whole checkpoint (run it with -benchtime=1x; CKPTFS_BENCH_GIB sets
// the size, 2 by default). It prints a table and writes it to
// integration/bench/out/remote.md.
func BenchmarkRemote(b *testing.B) {
	gib, _ := strconv.ParseFloat(os.Getenv("CKPTFS_BENCH_GIB"), 64)
	if gib <= 0 {
		gib = 2
	}
	// 8 MiB bf16 tensors, 32 to a shard.
	tensors := int(gib * 128)
	src := genHFCheckpoint(b, b.TempDir(), (tensors+31)/32, 32, 4<<20, 7).dir
	size := storetest.TreeBytes(b, src)
	s := startMinio(b)
	var rows []string
	row := func(metric string, secs, localSecs float64) {
		ours, local := float64(size)/secs/1e6, float64(size)/localSecs/1e6
		line := fmt.Sprintf("| %s | %.0f | %.0f | %.2f |", metric, ours, local, ours/local)
		b.Log(line)
		rows = append(rows, line)
	}
	timed := func(name string, args ...string) float64 {
		start := time.Now()
		run(b, name, args...)
		return time.Since(start).Seconds()
	}
	sync := func() { run(b, "sync") }
	dropCaches := func() {
		sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644); err != nil {
			b.Fatalf("drop caches (run as root): %v", err)
		}
	}

	local := filepath.Join(b.TempDir(), "ck")
	dropCaches()
	localWrite := timed("sh", "-c", fmt.Sprintf("cp -r %s %s && sync", src, local))
	a := s.mountRemote(b, plainBin, newStore(b))
	dropCaches()
	row("save: cp -r into the mount; each close waits for the bucket", timed("cp", "-r", src, a.path("ck")), localWrite)
	a.unmount()

	dropCaches()
	localRead := timed("sh", "-c", "cat $(find "+local+" -type f) >/dev/null")
	r := s.mountRemote(b, plainBin, newStore(b))
	dropCaches()
	row("cold load from the bucket (empty cache), all files", timed("sh", "-c", "cat $(find "+r.path("ck")+" -type f) >/dev/null"), localRead)
	r.unmount()
	r = s.mountRemote(b, plainBin, r.store)
	dropCaches()
	row("load from the local cache (remounted, page cache dropped)", timed("sh", "-c", "cat $(find "+r.path("ck")+" -type f) >/dev/null"), localRead)
	r.unmount()
	c := s.mountRemote(b, plainBin, newStore(b))
	dropCaches()
	row("cold load from the bucket, @single view", timed("sh", "-c", "cat "+c.path("ck@single", "model.safetensors")+" >/dev/null"), localRead)
	c.unmount()
	pullStore := newStore(b)
	dropCaches()
	row("reference: ckptfs pull of the checkpoint (8 GETs at a time)",
		timed(plainBin, append([]string{"--store", pullStore, "pull", "ck"}, s.remote()...)...), localRead)

	table := fmt.Sprintf("%.1f GiB of bf16 safetensors (%d shards), MinIO on 127.0.0.1 with its data on the same disk; MB/s.\n\n", float64(size)/(1<<30), (tensors+31)/32) +
		"| | ckptfs | local disk | ratio |\n|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	fmt.Print(table)
	if err := os.MkdirAll("bench/out", 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile("bench/out/remote.md", []byte(table), 0o644); err != nil {
		b.Fatal(err)
	}
}
