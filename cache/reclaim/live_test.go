package reclaim

import (
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/cache/chunk"
)

// A touched chunk is kept by the passes that start before two more
// generations turn, as recent; a pinned one until it is unpinned as often
// as pinned, and then as recent.
func TestLiveKeepsWhatIsTouchedAndPinned(t *testing.T) {
	l := NewLive(time.Nanosecond)
	touched, pinned := chunk.Sum([]byte("t")), chunk.Sum([]byte("p"))
	keeps := func(h chunk.Hash) (bool, bool) {
		l.lock()
		defer l.unlock()
		return l.keepsLocked(h)
	}
	l.Touch(touched)
	l.Pin([]chunk.Hash{pinned, pinned})
	for turn := range 2 {
		if keep, recent := keeps(touched); !keep || !recent {
			t.Fatalf("turn %d: touched chunk kept=%v recent=%v", turn, keep, recent)
		}
		time.Sleep(time.Millisecond)
		l.turn()
	}
	if keep, _ := keeps(touched); keep {
		t.Fatal("a chunk touched two generations ago is still kept")
	}
	l.Unpin([]chunk.Hash{pinned})
	l.turn()
	l.turn()
	if keep, recent := keeps(pinned); !keep || recent {
		t.Fatalf("pinned twice, unpinned once: kept=%v recent=%v", keep, recent)
	}
	l.Unpin([]chunk.Hash{pinned})
	if keep, recent := keeps(pinned); !keep || !recent {
		t.Fatalf("just unpinned: kept=%v recent=%v, want kept as recent", keep, recent)
	}
	var none *Live
	none.Touch(touched)
	if keep, _ := none.keepsLocked(touched); keep {
		t.Fatal("a nil Live keeps")
	}
}

// The references a kept delta needs are kept, and theirs in turn, up to a
// chain's bound; a loop ends.
func TestNeededReferencesFollowChains(t *testing.T) {
	h := func(i int) chunk.Hash { return chunk.Sum([]byte{byte(i)}) }
	refOf := map[chunk.Hash]chunk.Hash{h(1): h(2), h(2): h(3), h(5): h(6), h(6): h(5)}
	needed := NeededReferences(map[chunk.Hash]struct{}{h(1): {}, h(5): {}, h(9): {}}, refOf)
	for _, i := range []int{2, 3, 5, 6} {
		if _, ok := needed[h(i)]; !ok {
			t.Errorf("chunk %d not needed", i)
		}
	}
	if len(needed) != 4 {
		t.Errorf("%d chunks needed, want 4", len(needed))
	}
}
