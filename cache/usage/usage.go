// Package usage counts what a store's namespace uses, kept as it changes:
// how many records name each chunk (Refs), so that reclaim weighs only the
// chunks that changed, and what each checkpoint holds (Counts), so that
// listing the checkpoints costs their number, not their files.
package usage

import (
	"fmt"
	"sync"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
)

// Totals is what one checkpoint (an entry of the root) holds: its regular
// files, each counted once however many names it has, and their bytes.
type Totals struct {
	Files, Bytes int64
}

// Counts keeps the Totals of every checkpoint. They are counted once,
// from a snapshot (a Tally, made with what else counts from that snapshot:
// the store's reference counts), and kept from each committed change
// (Changed, meta.Hooks.Records). A folder moved between checkpoints makes
// both dirty: they are counted again, from a snapshot, when asked.
// Nothing of them is on disk, so a crash can leave no count wrong.
type Counts struct {
	mu    sync.Mutex
	top   map[uint64]uint64 // inode -> the checkpoint it is in; nil until built
	sums  map[uint64]*Totals
	dirty map[uint64]bool
	// multi holds, for a file with more than one name, the checkpoints
	// its names were seen in: a change of it makes them all dirty, as a
	// file is counted once in each checkpoint that has a name of it.
	multi map[uint64]map[uint64]bool
	// queue holds the changes committed while counting from a snapshot,
	// from its moment on; nil when not counting.
	queue [][]meta.RecordChange
}

func New() *Counts {
	return &Counts{dirty: map[uint64]bool{}, multi: map[uint64]map[uint64]bool{}}
}

func isFile(in *meta.Inode) bool { return in != nil && in.Mode&syscall.S_IFMT == syscall.S_IFREG }

// Changed applies a committed change: the Records hook.
func (t *Counts) Changed(chs []meta.RecordChange) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.queue != nil:
		t.queue = append(t.queue, chs)
	case t.top != nil:
		t.applyLocked(chs)
	}
}

// checkpointOf is the checkpoint an entry of folder parent is in: the
// entry itself in the root.
func (t *Counts) checkpointOf(parent, ino uint64) uint64 {
	if parent == meta.RootIno {
		return ino
	}
	return t.top[parent]
}

func (t *Counts) add(ck uint64, files, bytes int64) {
	if ck == 0 {
		return
	}
	s := t.sums[ck]
	if s == nil {
		s = &Totals{}
		t.sums[ck] = s
	}
	s.Files += files
	s.Bytes += bytes
}

// linked reports whether change c is of a file with more than one name,
// before or after.
func linked(c meta.RecordChange) bool {
	return isFile(c.Before) && c.Before.Links() > 1 || isFile(c.After) && c.After.Links() > 1
}

// dirtyLinked makes dirty every checkpoint that has, or had, a name of the
// file change c is of.
func (t *Counts) dirtyLinked(c meta.RecordChange) {
	ino := c.After
	if ino == nil {
		ino = c.Before
	}
	for ck := range t.multi[ino.Ino] {
		t.dirty[ck] = true
	}
	t.dirty[t.top[ino.Ino]] = true
	for _, p := range []uint64{c.Parent, c.NewParent} {
		if p != 0 {
			ck := t.checkpointOf(p, ino.Ino)
			t.dirty[ck] = true
			if t.multi[ino.Ino] == nil {
				t.multi[ino.Ino] = map[uint64]bool{}
			}
			t.multi[ino.Ino][ck] = true
		}
	}
}

func (t *Counts) applyLocked(chs []meta.RecordChange) {
	for _, c := range chs {
		if linked(c) {
			t.dirtyLinked(c)
			continue
		}
		switch {
		case c.Before == nil && c.After != nil: // created in c.Parent
			ck := t.checkpointOf(c.Parent, c.After.Ino)
			t.top[c.After.Ino] = ck
			if c.Parent == meta.RootIno {
				t.sums[ck] = &Totals{}
			}
			if isFile(c.After) {
				t.add(ck, 1, c.After.Content.Size)
			}
		case c.After == nil && c.Before != nil: // its last name removed
			ino := c.Before.Ino
			if isFile(c.Before) {
				t.add(t.top[ino], -1, -c.Before.Content.Size)
			}
			delete(t.top, ino)
			delete(t.sums, ino) // a checkpoint no more
			delete(t.dirty, ino)
			delete(t.multi, ino)
		case c.NewParent != 0 && c.Parent != 0: // renamed into another folder
			ino := c.After.Ino
			from, to := t.top[ino], t.checkpointOf(c.NewParent, ino)
			if from == to {
				continue
			}
			t.top[ino] = to
			if c.NewParent == meta.RootIno {
				t.sums[to] = &Totals{}
			}
			if c.Parent == meta.RootIno {
				delete(t.sums, ino)
			}
			if isFile(c.After) {
				t.add(from, -1, -c.After.Content.Size)
				t.add(to, 1, c.After.Content.Size)
			} else { // a folder: what is below it moved too
				t.dirty[from], t.dirty[to] = true, true
			}
		case c.Before != nil && c.After != nil && isFile(c.After): // rewritten, or a link made or dropped
			t.add(t.top[c.After.Ino], 0, c.After.Content.Size-c.Before.Content.Size)
		}
	}
}

// count counts, from snapshot snap (taken at the moment Start ran),
// the Totals of checkpoint ck by walking it, and applies the changes
// queued since.
func (t *Counts) count(snap *meta.Namespace, ck uint64) error {
	top := map[uint64]uint64{}
	multi := map[uint64]map[uint64]bool{}
	sum := &Totals{}
	seen := map[uint64]bool{}
	add := func(in *meta.Inode) {
		top[in.Ino] = ck
		if !isFile(in) || seen[in.Ino] {
			return
		}
		seen[in.Ino] = true
		sum.Files++
		sum.Bytes += in.Content.Size
		if in.Links() > 1 {
			multi[in.Ino] = map[uint64]bool{ck: true}
		}
	}
	in, err := snap.GetInode(ck)
	if err != nil {
		return err
	}
	add(in)
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if err := snap.Walk(ck, func(_ string, in *meta.Inode) error { add(in); return nil }); err != nil {
			return err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.top == nil {
		t.top, t.sums = map[uint64]uint64{}, map[uint64]*Totals{}
	}
	for ino, c := range top {
		t.top[ino] = c
	}
	t.sums[ck] = sum
	delete(t.dirty, ck)
	for ino, cks := range multi {
		if t.multi[ino] == nil {
			t.multi[ino] = map[uint64]bool{}
		}
		for c := range cks {
			t.multi[ino][c] = true
		}
	}
	for _, chs := range t.queue {
		t.applyLocked(chs)
	}
	t.queue = nil
	return nil
}

// Tally counts what every checkpoint holds from one pass over a
// snapshot's entries (where) and one over its records (record), where a
// walk would read a record per entry.
type Tally struct {
	dirParent map[uint64]uint64   // folder -> the folder it is in
	fileDir   map[uint64]uint64   // file -> the folder of a name of it
	moreDirs  map[uint64][]uint64 // file -> the folders of its other names
	dirTop    map[uint64]uint64   // folder -> its checkpoint, as found
	top       map[uint64]uint64
	sums      map[uint64]*Totals
	multi     map[uint64]map[uint64]bool
}

func NewTally() *Tally {
	return &Tally{dirParent: map[uint64]uint64{}, fileDir: map[uint64]uint64{}, moreDirs: map[uint64][]uint64{}, dirTop: map[uint64]uint64{},
		top: map[uint64]uint64{}, sums: map[uint64]*Totals{}, multi: map[uint64]map[uint64]bool{}}
}

// Entry notes one directory entry of the snapshot.
func (y *Tally) Entry(parent uint64, _ string, ino uint64, mode uint32) error {
	switch {
	case parent == meta.RootIno:
		y.sums[ino] = &Totals{}
		y.top[ino] = ino
		if mode == syscall.S_IFDIR {
			y.dirTop[ino] = ino
		} else {
			y.fileIn(ino, parent)
		}
	case mode == syscall.S_IFDIR:
		y.dirParent[ino] = parent
	default:
		y.fileIn(ino, parent)
	}
	return nil
}

// fileIn notes a name of file ino in folder dir.
func (y *Tally) fileIn(ino, dir uint64) {
	if _, ok := y.fileDir[ino]; ok {
		y.moreDirs[ino] = append(y.moreDirs[ino], dir)
	} else {
		y.fileDir[ino] = dir
	}
}

// checkpointOfDir is the checkpoint folder dir is in, 0 if none (a folder
// no entry reaches).
func (y *Tally) checkpointOfDir(dir uint64) uint64 {
	if ck, ok := y.dirTop[dir]; ok {
		return ck
	}
	var path []uint64
	ck := uint64(0)
	for d, depth := dir, 0; depth < 1<<16; depth++ {
		if c, ok := y.dirTop[d]; ok {
			ck = c
			break
		}
		path = append(path, d)
		p, ok := y.dirParent[d]
		if !ok {
			break
		}
		d = p
	}
	for _, d := range path {
		y.dirTop[d] = ck
	}
	return ck
}

// Record counts one record of the snapshot, after every entry was noted.
func (y *Tally) Record(in *meta.Inode) {
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if ck := y.checkpointOfDir(in.Ino); ck != 0 {
			y.top[in.Ino] = ck
		}
		return
	}
	dir, ok := y.fileDir[in.Ino]
	if !ok {
		return // no entry names it
	}
	var seen map[uint64]bool // checkpoints of a file of several names
	for _, dir := range append([]uint64{dir}, y.moreDirs[in.Ino]...) {
		ck := in.Ino
		if dir != meta.RootIno {
			ck = y.checkpointOfDir(dir)
		}
		if ck == 0 || seen[ck] {
			continue
		}
		if len(y.moreDirs[in.Ino]) > 0 {
			if seen == nil {
				seen = map[uint64]bool{}
			}
			seen[ck] = true
		}
		y.top[in.Ino] = ck
		if isFile(in) {
			y.sums[ck].Files++
			y.sums[ck].Bytes += in.Content.Size
			if in.Links() > 1 {
				if y.multi[in.Ino] == nil {
					y.multi[in.Ino] = map[uint64]bool{}
				}
				y.multi[in.Ino][ck] = true
			}
		}
	}
}

// Install takes what the tally counted, from the snapshot Start ran at,
// and applies the changes queued since.
func (t *Counts) Install(y *Tally) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.top, t.sums, t.multi = y.top, y.sums, y.multi
	for _, chs := range t.queue {
		t.applyLocked(chs)
	}
	t.queue = nil
}

// Start is called at the moment of the snapshot a Tally counts from:
// changes committed after it are queued until Install.
func (t *Counts) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.queue = [][]meta.RecordChange{}
}

// Abandon gives up a count that failed: nothing is queued any more.
func (t *Counts) Abandon() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.queue = nil
}

// Checkpoint is what checkpoint ino (an entry of the root) of namespace
// ns holds: from the counts kept, counted first in one pass over ns's
// entries and records if they are not kept yet, and again by a walk of
// the checkpoint if it is dirty.
func (t *Counts) Checkpoint(ns *meta.Namespace, ino uint64) (Totals, error) {
	t.mu.Lock()
	built, dirty := t.top != nil, t.dirty[ino]
	t.mu.Unlock()
	if !built {
		y := NewTally()
		err := ns.SnapshotFrom(t.Start, func(snap *meta.Namespace) error {
			if err := snap.ScanEntries(y.Entry); err != nil {
				return err
			}
			return snap.ScanRecords(func(in *meta.Inode) error { y.Record(in); return nil })
		})
		if err != nil {
			t.Abandon()
			return Totals{}, err
		}
		t.Install(y)
	}
	if dirty {
		err := ns.SnapshotFrom(t.Start, func(snap *meta.Namespace) error { return t.count(snap, ino) })
		if err != nil {
			t.Abandon()
			return Totals{}, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if sum := t.sums[ino]; sum != nil {
		return *sum, nil
	}
	return Totals{}, fmt.Errorf("inode %d: not a checkpoint: %w", ino, syscall.ENOENT)
}
