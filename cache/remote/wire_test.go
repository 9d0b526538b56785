package remote

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
)

// TestManifestWireFormat: the manifest of a known checkpoint is byte for
// byte what format 1 has always been (this is the previous encoder's
// output), so buckets written before stay readable and unchanged
// checkpoints are not republished.
func TestManifestWireFormat(t *testing.T) {
	s := openTemp(t)
	dir, _ := s.Namespace().Create(meta.RootIno, "ck", meta.Inode{Mode: syscall.S_IFDIR | 0o750, Uid: 7, Gid: 8, Atime: 1, Mtime: 2, Ctime: 3})
	c, _, _ := s.Ingest(bytes.NewReader([]byte("weights")))
	s.Namespace().Create(dir.Ino, "w.bin", meta.Inode{Mode: syscall.S_IFREG | 0o640, Uid: 7, Gid: 8, Atime: 4, Mtime: 5, Ctime: 6, Content: *c})
	s.Namespace().Create(dir.Ino, "l", meta.Inode{Mode: syscall.S_IFLNK | 0o777, Target: "w.bin", Atime: 7, Mtime: 8, Ctime: 9})
	_, js, err := buildManifest(s, "ck")
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"format":"ckptfs-checkpoint/1","name":"ck","entries":[{"path":"","Ino":0,"Mode":16872,"Uid":7,"Gid":8,"Atime":1,"Mtime":9,"Ctime":9,"Target":"","Content":{"Size":0,"Kind":0,"Chunks":[]}},{"path":"l","Ino":0,"Mode":41471,"Uid":0,"Gid":0,"Atime":7,"Mtime":8,"Ctime":9,"Target":"w.bin","Content":{"Size":0,"Kind":0,"Chunks":[]}},{"path":"w.bin","Ino":0,"Mode":33184,"Uid":7,"Gid":8,"Atime":4,"Mtime":5,"Ctime":6,"Target":"","Content":{"Size":7,"Kind":0,"Chunks":[{"Hash":"3edc5c4a5df8c79ef4f8dbdc373cd21ca041ccf39fe5693250d004092094dc4a","Len":7}]}}]}`
	if string(js) != want {
		t.Fatalf("manifest\n%s\nwant\n%s", js, want)
	}
}
