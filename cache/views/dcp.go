package views

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/ckptfs/ckptfs/layout"
)

// ModelPrefixFile, in a DCP checkpoint folder, overrides which tensors its
// views serve: the one line it holds is a name prefix (see
// layout.DCPModelNames); empty serves every tensor as named.
const ModelPrefixFile = ".ckptfs-model-prefix"

// maxPrefixFile bounds the ModelPrefixFile read.
const maxPrefixFile = 4 << 10

// isDCPFolder reports whether a folder holds a DCP checkpoint: a .metadata
// and at least one .distcp file.
func isDCPFolder(entries []meta.DirEntry) bool {
	var md, data bool
	for _, e := range entries {
		if e.Mode == syscall.S_IFREG {
			md = md || e.Name == layout.DCPMetadataName
			data = data || layout.IsDCPDataFile(e.Name)
		}
	}
	return md && data
}

// planDCP plans v from the folder's DCP checkpoint; it returns the files
// it read, which are not passed through. A .metadata that does not parse
// leaves the folder without views (ENOENT), with a warning.
func planDCP(store *store.Store, log *slog.Logger, v *View, dirPath string, entries []meta.DirEntry, inodes map[string]*meta.Inode, spec layout.ViewSpec) (map[string]bool, error) {
	mdPath := dirPath + "/" + layout.DCPMetadataName
	data, err := readSmall(store, mdPath, inodes[layout.DCPMetadataName], layout.MaxPickleSize)
	if err != nil {
		log.Warn("left out of views", "file", mdPath, "reason", err)
		return nil, syscall.ENOENT
	}
	ck, err := layout.ParseDCPMetadata(data)
	if err != nil {
		log.Warn("left out of views", "file", mdPath, "reason", err)
		return nil, syscall.ENOENT
	}
	used := map[string]bool{layout.DCPMetadataName: true}
	prefix, override := "", false
	if in, ok := inodes[ModelPrefixFile]; ok && in.Mode&syscall.S_IFMT == syscall.S_IFREG {
		b, err := readSmall(store, dirPath+"/"+ModelPrefixFile, in, maxPrefixFile)
		if err != nil {
			log.Warn("model prefix ignored", "file", dirPath+"/"+ModelPrefixFile, "reason", err)
		} else {
			prefix, override = string(bytes.TrimRight(b, "\r\n")), true
			used[ModelPrefixFile] = true
		}
	}
	var files []layout.DCPFile
	for _, e := range entries {
		in := inodes[e.Name]
		if !layout.IsDCPDataFile(e.Name) || in.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		r := store.NewReader(dirPath+"/"+e.Name, &in.Content)
		files = append(files, layout.DCPFile{Name: e.Name, R: r, Size: r.Size()})
		v.Sources = append(v.Sources, r)
		v.Weights = append(v.Weights, in)
		used[e.Name] = true
	}
	v.Weights = append(v.Weights, inodes[layout.DCPMetadataName])
	lv, err := layout.BuildDCPView(ck, layout.DCPModelNames(ck, prefix, override), files, spec)
	if err := takePlan(v, lv, err, log, dirPath); err != nil {
		return nil, err
	}
	return used, nil
}

// readSmall reads a stored file of at most limit bytes whole.
func readSmall(store *store.Store, path string, in *meta.Inode, limit int64) ([]byte, error) {
	if in.Content.Size > limit {
		return nil, fmt.Errorf("%d bytes is larger than %d", in.Content.Size, limit)
	}
	r := store.NewReader(path, &in.Content)
	return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
}
