package view

import (
	"errors"
	"fmt"
	"slices"
)

// Bounds on planning the views of one state of a folder, for all its
// files together: hard links and copies make names free, so a bound per
// file bounds nothing. A 70B model saved as distributed safetensors from
// 1,024 ranks (723 tensors, a piece of each in every rank's file) takes
// 104 MB of headers, 575,649 tensor entries and 1,150,952 parts, planned
// in 5.5 s (BenchmarkPlan70BFrom1024Ranks).
const (
	// MaxPlanHeaderBytes bounds the header bytes a plan reads and parses:
	// safetensors headers, the zip directories and data.pkl of torch.save
	// files and DCP items, a DCP .metadata.
	MaxPlanHeaderBytes = 256 << 20
	// MaxPlanTensors bounds the tensor entries a plan takes from them,
	// and the DCP chunks it locates.
	MaxPlanTensors = 1 << 20
	// MaxPlanParts bounds the pieces of tensors a plan lays out and the
	// runs and tile parts it assembles them from, about two for each
	// piece: a tensor sharded on dim 1 costs a part per shard, not per row.
	MaxPlanParts = 2 << 20
)

// Budget is what is left to spend planning the views of one state of a
// folder. Every header read, tensor entry and part assembled is paid for,
// however many names or links lead to the same bytes; a plan over it is
// refused. It is not safe for concurrent use: one plan is one goroutine.
type Budget struct {
	headerBytes, tensors, parts int64
}

// NewBudget returns the budget of one plan: MaxPlanHeaderBytes,
// MaxPlanTensors and MaxPlanParts.
func NewBudget() *Budget {
	return &Budget{headerBytes: MaxPlanHeaderBytes, tensors: MaxPlanTensors, parts: MaxPlanParts}
}

// BudgetError is a plan over its budget: the whole plan is refused.
type BudgetError struct {
	What  string // "header bytes", "tensors" or "parts"
	Limit int64
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("the folder's views need more than %d %s, over the limit", e.Limit, e.What)
}

// String says what has been spent.
func (b *Budget) String() string {
	return fmt.Sprintf("%d header bytes, %d tensors, %d parts", MaxPlanHeaderBytes-b.headerBytes, MaxPlanTensors-b.tensors, MaxPlanParts-b.parts)
}

// overBudget reports whether err is a plan over its Budget.
func overBudget(err error) bool {
	var over *BudgetError
	return errors.As(err, &over)
}

// SpendHeader pays for n header bytes about to be read and parsed.
func (b *Budget) SpendHeader(n int64) error {
	return spend(&b.headerBytes, n, "header bytes", MaxPlanHeaderBytes)
}

// SpendTensors pays for n tensor entries taken, or DCP chunks located.
func (b *Budget) SpendTensors(n int) error {
	return spend(&b.tensors, int64(n), "tensors", MaxPlanTensors)
}

// SpendParts pays for n pieces laid out, or runs and tile parts
// assembled.
func (b *Budget) SpendParts(n int) error {
	return spend(&b.parts, int64(n), "runs and tile parts", MaxPlanParts)
}

func spend(left *int64, n int64, what string, limit int64) error {
	if n > *left {
		*left = -1
		return &BudgetError{What: what, Limit: limit}
	}
	*left -= n
	return nil
}

// MaxWarnings is how many warnings a file or a plan keeps; the rest are
// counted.
const MaxWarnings = 20

// Warnings collects what is left out and why. It keeps the first
// MaxWarnings and counts the rest, and formats only what it keeps: a
// folder whose files define a million names twice logs a few lines, not
// a million.
type Warnings struct {
	kept []string
	more int
}

// Addf adds a warning, formatted as fmt.Sprintf does.
func (w *Warnings) Addf(format string, args ...any) {
	if len(w.kept) < MaxWarnings {
		w.kept = append(w.kept, fmt.Sprintf(format, args...))
		return
	}
	w.more++
}

// List is the warnings kept and, when there were more, a line that
// counts them.
func (w *Warnings) List() []string {
	if w.more == 0 {
		return w.kept
	}
	return append(slices.Clip(w.kept), fmt.Sprintf("and %d more like these", w.more))
}
