package main

import (
	"strings"
	"testing"
)

func TestMountHelperArgs(t *testing.T) {
	for _, tc := range []struct{ argv, want, err string }{
		{argv: "/var/lib/ckptfs /mnt/ckpt -o rw,allow_other,cache_size=1GiB,nofail,x-systemd.automount",
			want: "--store /var/lib/ckptfs mount --allow-other --cache-size=1GiB /mnt/ckpt"},
		{argv: "ckptfs /mnt/ckpt -o store=/s,ro,log_level=debug,metrics_addr=127.0.0.1:9101,pprof -n -t fuse.ckptfs",
			want: "--store /s --log-level debug mount --read-only --metrics-addr=127.0.0.1:9101 --pprof /mnt/ckpt"},
		{argv: "/s /m -r -oshow_views", want: "--store /s mount --read-only --show-views /m"},
		{argv: "/c /m -o remote=s3://ckpt/team,remote_endpoint=http://minio:9000,remote_cache_size=200GiB,remote_ttl=5s,_netdev",
			want: "--store /c mount --remote=s3://ckpt/team --remote-endpoint=http://minio:9000 --remote-cache-size=200GiB --remote-ttl=5s /m"},
		{argv: "/c /m -o remote=s3://b,remote_credentials=/etc/ckptfs/aws,remote_profile=train",
			want: "--store /c mount --remote=s3://b --remote-credentials=/etc/ckptfs/aws --remote-profile=train /m"},
		{argv: "ckptfs /mnt/ckpt -o allow_other", err: "no store"},
		{argv: "/s /m -o bogus", err: `mount option "bogus" is not known`},
		{argv: "/s /m -o store=", err: "needs a value"},
		{argv: "/s", err: "usage"},
		{argv: "/s /m -N ns", err: "option -N is not known"},
	} {
		got, err := mountHelperArgs(strings.Fields(tc.argv))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.argv, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.argv, strings.Join(got, " "), err, tc.want)
		}
	}
}

func TestExposureWarning(t *testing.T) {
	for addr, exposed := range map[string]bool{
		"127.0.0.1:9101": false, "[::1]:9101": false, "localhost:9101": false,
		"0.0.0.0:9101": true, ":9101": true, "10.1.2.3:9101": true, "node7:9101": true,
	} {
		if got := exposureWarning(addr, true) != ""; got != exposed {
			t.Errorf("%s: warned %v, want %v", addr, got, exposed)
		}
	}
}
