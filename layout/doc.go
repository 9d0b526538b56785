// Package layout groups the checkpoint formats ckptfs reads and writes,
// one package each, as pure byte-level logic that opens no files: parsers
// read byte slices, an io.ReaderAt or a stream they are handed. It holds
// no code.
//
//   - safetensors: headers (parsed, validated and emitted), index.json,
//     element types, and the DCP_SHARDING_INFO of a distributed save.
//   - pickle: the restricted pickle reader, which builds plain data and
//     admits only the globals its rules name.
//   - torch: torch.save zips read without unpickling, and ReadRecords,
//     which reads a checkpoint being written as tensors and the bytes
//     around them.
//   - dcp: a torch.distributed.checkpoint folder's .metadata and the plan
//     of its model view, assembled from the ranks' chunks.
//   - view: view planning: the tensors of a folder's weight files, the
//     rule for a name two files define, the assembly of pieces into runs
//     and tiles, the layout of @single and @shards files as extent maps,
//     and the budget and warnings of one plan.
//   - layouttest: checkpoint files for tests, hostile ones among them,
//     and checks that need no code under test; viewtest: planned views
//     read back in tests.
//
// The arrows point one way: safetensors and pickle import no other; torch
// imports both, view safetensors, dcp the four. A parser that pays from a
// view's budget, or warns, takes a one-method interface instead.
package layout
