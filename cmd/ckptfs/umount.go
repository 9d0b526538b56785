package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) umountCmd() *cobra.Command {
	var lazy bool
	cmd := &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Flush and unmount a ckptfs mount",
		Long: `Unmount MOUNTPOINT and wait until its daemon has committed every open file,
chunked the files it staged (saves write behind) and closed the store. A
mount still in use fails with "busy" unless --lazy, which detaches it now
and finishes when the last file is closed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			store, ok := ckptfsMountStore(mnt)
			if !ok {
				return fmt.Errorf("%s is not a ckptfs mount", mnt)
			}
			// The pid file goes away as the daemon exits: read it first.
			pid, _, havePid := readPidFile(store)
			fuArgs := []string{"-u", mnt}
			if lazy {
				fuArgs = []string{"-u", "-z", mnt}
			}
			if out, err := exec.Command("fusermount3", fuArgs...).CombinedOutput(); err != nil {
				return fmt.Errorf("unmount %s: %s", mnt, strings.TrimSpace(string(out)))
			}
			if havePid && !lazy && !waitGone(pid, 5*time.Second) {
				// Saves write behind: the daemon chunks what it staged first.
				fmt.Fprintf(a.stderr, "waiting for daemon %d to chunk the files it staged and close the store\n", pid)
				if !waitGone(pid, 30*time.Minute) {
					return fmt.Errorf("unmounted %s, but daemon %d is still running", mnt, pid)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&lazy, "lazy", "z", false, "detach now even if files are open")
	return cmd
}

// ckptfsMountStore finds the store behind a ckptfs mount in mountinfo,
// where the mount's source is "ckptfs:STORE".
func ckptfsMountStore(mnt string) (string, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+3 || len(fields) < 5 {
			continue
		}
		if unescape(fields[4]) != mnt || !strings.HasPrefix(fields[sep+1], "fuse") {
			continue
		}
		if src := unescape(fields[sep+2]); strings.HasPrefix(src, "ckptfs:") {
			return strings.TrimPrefix(src, "ckptfs:"), true
		}
	}
	return "", false
}

// unescape decodes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
