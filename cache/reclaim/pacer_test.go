package reclaim

import (
	"runtime"
	"testing"
	"time"
)

// The reclaimer's rest follows the CPU its pass spent, which a pass
// waiting on the disk or on locks does not spend.
func TestThreadCPUCountsWorkNotWaits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPU()
	time.Sleep(200 * time.Millisecond)
	slept := threadCPU() - start
	start = threadCPU()
	begin := time.Now()
	for threadCPU()-start < 100*time.Millisecond {
		if time.Since(begin) > time.Minute {
			t.Fatal("thread CPU: a minute busy did not count 100 ms")
		}
	}
	if slept > 50*time.Millisecond {
		t.Fatalf("thread CPU: %v counted for 200 ms asleep", slept)
	}
}
