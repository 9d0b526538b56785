package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// mountHelperName is the name mount(8) runs for type fuse.ckptfs; 'make
// install' links it to this program.
const mountHelperName = "mount.fuse.ckptfs"

func isMountHelper(argv0 string) bool {
	base := filepath.Base(argv0)
	return base == mountHelperName || base == "mount.ckptfs"
}

// mountOptionFlags maps the -o options of an fstab line to mount flags;
// a flag without "=" takes no value.
var mountOptionFlags = map[string]string{
	"store": "--store", "log_level": "--log-level",
	"allow_other": "--allow-other", "ro": "--read-only", "show_views": "--show-views",
	"cache_size": "--cache-size", "hot_size": "--hot-size", "hot_as_written": "--hot-as-written",
	"metrics_addr": "--metrics-addr", "pprof": "--pprof", "debug": "--debug", "reclaim_after": "--reclaim-after",
	"write_through": "--write-through", "verify_reads": "--verify-reads", "daemon_writes": "--daemon-writes",
	"remote": "--remote", "remote_endpoint": "--remote-endpoint",
	"remote_cache_size": "--remote-cache-size", "remote_ttl": "--remote-ttl",
	"remote_credentials": "--remote-credentials", "remote_profile": "--remote-profile",
}

// genericMountOptions are mount(8)'s own options, which mean nothing here
// or are the default.
var genericMountOptions = map[string]bool{
	"rw": true, "defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "owner": true, "group": true, "_netdev": true, "nofail": true, "exec": true,
	"noexec": true, "suid": true, "nosuid": true, "dev": true, "nodev": true, "atime": true,
	"noatime": true, "relatime": true, "strictatime": true, "nodiratime": true, "diratime": true,
	"async": true, "loud": true, "silent": true,
}

// mountHelperArgs turns what mount(8) passes a helper,
//
//	SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t fuse.ckptfs]
//
// into the equivalent command line: [--store DIR] mount [flags] MOUNTPOINT.
// The store is -o store=DIR, else SOURCE when it is a path.
func mountHelperArgs(argv []string) ([]string, error) {
	var positional, options []string
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		switch {
		case arg == "-o" || arg == "-t":
			if i+1 == len(argv) {
				return nil, fmt.Errorf("%s needs a value", arg)
			}
			if arg == "-o" {
				options = append(options, strings.Split(argv[i+1], ",")...)
			}
			i++
		case strings.HasPrefix(arg, "-o"):
			options = append(options, strings.Split(arg[2:], ",")...)
		case strings.HasPrefix(arg, "-t"):
		case len(arg) > 1 && arg[0] == '-' && strings.Trim(arg[1:], "sfnvr") == "":
			// sloppy, fake, no-mtab, verbose, read-only: mount(8)'s own
			if strings.Contains(arg, "r") {
				options = append(options, "ro")
			}
		case strings.HasPrefix(arg, "-"):
			return nil, fmt.Errorf("option %s is not known", arg)
		default:
			positional = append(positional, arg)
		}
	}
	if len(positional) != 2 {
		return nil, errors.New("usage: " + mountHelperName + " STORE MOUNTPOINT [-o OPTIONS]")
	}
	var global, flags []string
	haveStore := strings.Contains(positional[0], "/")
	if haveStore {
		global = append(global, "--store", positional[0])
	}
	for _, o := range options {
		key, value, hasValue := strings.Cut(o, "=")
		flag, known := mountOptionFlags[key]
		switch {
		case o == "" || genericMountOptions[o] || strings.HasPrefix(o, "x-") || key == "comment":
		case !known:
			return nil, fmt.Errorf("mount option %q is not known", o)
		case key == "store" || key == "log_level":
			if value == "" {
				return nil, fmt.Errorf("mount option %q needs a value", o)
			}
			global = append(global, flag, value)
			haveStore = haveStore || key == "store"
		case hasValue:
			flags = append(flags, flag+"="+value)
		default:
			flags = append(flags, flag)
		}
	}
	if !haveStore {
		return nil, errors.New("no store: give it as the source (/var/lib/ckptfs) or as -o store=DIR")
	}
	return append(append(global, "mount"), append(flags, positional[1])...), nil
}
