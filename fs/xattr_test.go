package fs

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ckptfs/ckptfs/cache/meta"
	"github.com/ckptfs/ckptfs/cache/store"
)

// User xattrs are kept in the record with setxattr(2)'s flags and Linux's
// bounds; other namespaces are ENOTSUP, security.* reads as none.
func TestStoredXattrs(t *testing.T) {
	store, err := store.Open(filepath.Join(t.TempDir(), "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	in, err := store.Namespace().Create(meta.RootIno, "f", meta.Inode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	n := &stored{fsys: &FS{store: store, log: slog.Default()}, ino: in.Ino}
	ctx := context.Background()
	check := func(what string, got, want syscall.Errno) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	check("set", n.Setxattr(ctx, "user.a", []byte("1"), 0), 0)
	check("create existing", n.Setxattr(ctx, "user.a", []byte("2"), xattrCreate), syscall.EEXIST)
	check("replace missing", n.Setxattr(ctx, "user.b", []byte("2"), xattrReplace), syscall.ENODATA)
	check("replace", n.Setxattr(ctx, "user.a", []byte("22"), xattrReplace), 0)
	check("acl", n.Setxattr(ctx, "system.posix_acl_access", []byte("x"), 0), syscall.ENOTSUP)
	check("too large", n.Setxattr(ctx, "user.big", make([]byte, meta.MaxXattrSize), 0), syscall.ENOSPC)
	check("long name", n.Setxattr(ctx, "user."+strings.Repeat("n", 251), nil, 0), syscall.ERANGE)

	buf := make([]byte, 16)
	if size, errno := n.Getxattr(ctx, "user.a", nil); errno != syscall.ERANGE || size != 2 {
		t.Errorf("size of user.a: %d %v", size, errno)
	}
	if size, errno := n.Getxattr(ctx, "user.a", buf); errno != 0 || string(buf[:size]) != "22" {
		t.Errorf("user.a: %q %v", buf[:size], errno)
	}
	_, errno := n.Getxattr(ctx, "security.capability", buf)
	check("security.capability", errno, syscall.ENODATA)
	_, errno = n.Getxattr(ctx, "system.posix_acl_access", buf)
	check("get acl", errno, syscall.ENOTSUP)
	if size, errno := n.Listxattr(ctx, buf); errno != 0 || string(buf[:size]) != "user.a\x00" {
		t.Errorf("list: %q %v", buf[:size], errno)
	}
	check("remove", n.Removexattr(ctx, "user.a"), 0)
	check("remove again", n.Removexattr(ctx, "user.a"), syscall.ENODATA)
	if rec, err := store.Namespace().GetInode(in.Ino); err != nil || len(rec.Xattrs) != 0 {
		t.Errorf("record after removal: %v, %v", rec.Xattrs, err)
	}
}
