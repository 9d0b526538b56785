package views

import (
	"bytes"
	"fmt"
	"io"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/layout/dcp"
	"github.com/ckptfs/ckptfs/layout/pickle"
	"github.com/ckptfs/ckptfs/layout/view"
)

// ModelPrefixFile, in a DCP checkpoint folder, overrides which tensors its
// views serve: the one line it holds is a name prefix (see
// dcp.ModelNames); empty serves every tensor as named.
const ModelPrefixFile = ".ckptfs-model-prefix"

// maxPrefixFile bounds the ModelPrefixFile read.
const maxPrefixFile = 4 << 10

// isDCPFolder reports whether a folder holds a DCP checkpoint: a .metadata
// and at least one .distcp file.
func isDCPFolder(entries []meta.DirEntry) bool {
	var md, data bool
	for _, e := range entries {
		if e.Mode == syscall.S_IFREG {
			md = md || e.Name == dcp.MetadataName
			data = data || dcp.IsDataFile(e.Name)
		}
	}
	return md && data
}

// planDCP plans f from the folder's DCP checkpoint; it returns the files
// it read, which are not passed through. A .metadata that does not parse
// leaves the folder without views, with a warning.
func planDCP(st Store, f *Folder, entries []meta.DirEntry, inodes map[string]*meta.Inode, b *view.Budget, w *view.Warnings) (map[string]bool, error) {
	md := inodes[dcp.MetadataName]
	if err := b.SpendHeader(min(md.Content.Size, pickle.MaxSize)); err != nil {
		return nil, err
	}
	data, err := readSmall(st, f.dirPath+"/"+dcp.MetadataName, md, pickle.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dcp.MetadataName, err)
	}
	ck, err := dcp.ParseMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dcp.MetadataName, err)
	}
	used := map[string]bool{dcp.MetadataName: true}
	prefix, override := "", false
	if in, ok := inodes[ModelPrefixFile]; ok && in.Mode&syscall.S_IFMT == syscall.S_IFREG {
		line, err := readSmall(st, f.dirPath+"/"+ModelPrefixFile, in, maxPrefixFile)
		if err != nil {
			w.Addf("%s: %v: model prefix ignored", ModelPrefixFile, err)
		} else {
			prefix, override = string(bytes.TrimRight(line, "\r\n")), true
			used[ModelPrefixFile] = true
		}
	}
	var files []dcp.File
	for _, e := range entries {
		in := inodes[e.Name]
		if !dcp.IsDataFile(e.Name) || in.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		r := st.NewReader(f.dirPath+"/"+e.Name, &in.Content)
		files = append(files, dcp.File{Name: e.Name, R: r, Size: r.Size()})
		f.Sources = append(f.Sources, r)
		f.Weights = append(f.Weights, in)
		used[e.Name] = true
	}
	f.Weights = append(f.Weights, md)
	f.plan, err = dcp.Plan(ck, dcp.ModelNames(ck, prefix, override), files, b, w)
	return used, err
}

// readSmall reads a stored file of at most limit bytes whole.
func readSmall(st Store, path string, in *meta.Inode, limit int64) ([]byte, error) {
	if in.Content.Size > limit {
		return nil, fmt.Errorf("%d bytes is larger than %d", in.Content.Size, limit)
	}
	r := st.NewReader(path, &in.Content)
	return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
}
