#!/bin/sh
# The POSIX rules users' tools rely on, run in folder $1 by whoever runs
# this: one line per step, "ok" with what it printed, or "fail" with the
# reason (strerror, without the tool's wording of the path). The folder
# holds the fixtures posix_fixtures.sh made as root.
set -u
umask 022
cd "$1" || exit 1
step() {
	name=$1
	shift
	if out=$("$@" 2>&1); then
		echo "$name: ok $out"
	else
		echo "$name: fail ${out##*: }"
	fi
}
step sticky-rm-theirs rm -f sticky/theirs
step sticky-mv-theirs mv sticky/theirs2 sticky/moved
step sticky-own sh -c 'touch sticky/mine && mv sticky/mine sticky/mine2 && rm sticky/mine2'
step sgid-file sh -c 'touch sgid/f && stat -c "%g %a" sgid/f'
step sgid-dir sh -c 'mkdir sgid/d && stat -c "%g %a" sgid/d && touch sgid/d/f && stat -c "%g" sgid/d/f'
step chmod-theirs chmod 600 theirs
step chown-theirs chown 65534 theirs
step chgrp-own sh -c 'touch own-grp && chgrp 65534 own-grp && stat -c "%g" own-grp'
step setuid-own sh -c 'touch own-suid && chmod 4755 own-suid && stat -c "%a" own-suid'
# A write, a truncate or a chown drops set-ID bits, unless root's.
step write-suid sh -c 'echo x >> suid-w && stat -c "%a" suid-w'
step write-sgid-noexec sh -c 'echo x >> sgid-nx && stat -c "%a" sgid-nx'
step truncate-suid sh -c 'truncate -s 1 suid-t && stat -c "%a" suid-t'
step otrunc-suid sh -c ': > suid-o && stat -c "%a" suid-o'
step chown-suid sh -c 'chown 0:0 suid-c && stat -c "%a" suid-c'
step write-readonly sh -c 'echo x >> readonly'
step read-private cat private
step xattr-set-readonly setfattr -n user.x -v 1 readonly
step xattr-get-private getfattr --only-values -n user.kept private
step xattr-set-own sh -c 'touch own-x && setfattr -n user.x -v 1 own-x && getfattr --only-values -n user.x own-x'
step xattr-acl-own setfattr -n system.posix_acl_access -v x own-x
step touch-date-theirs touch -d @1600000000 writable
step touch-now-theirs touch writable
step truncate-theirs truncate -s 1 writable
step excl sh -c 'set -C; echo a > excl; echo b > excl'
step excl-kept cat excl
step mkdir-in-closed mkdir closed/sub
step create-in-closed touch closed/f
step link-theirs ln theirs-ro hard
step link-own sh -c 'touch own-l && ln own-l own-l2 && stat -c "%h" own-l'
step rename-dir-over-empty sh -c 'mkdir -p a/x b && mv -T a b && ls b'
step rename-dir-over-full sh -c 'mkdir -p c/x d/y && mv -T c d'
# rename(2) itself, which mv checks ahead of
rename() { perl -e 'rename($ARGV[0], $ARGV[1]) or die "rename: $!\n"' "$@"; }
touch e && mkdir -p f && step rename-file-over-dir rename e f
mkdir -p g && touch h && step rename-dir-over-file rename g h
mkdir -p m/n && step rename-into-self rename m m/n/m
touch q && ln q q2 && step rename-over-self-link sh -c 'perl -e "rename(\"q\", \"q2\") or die" && ls q q2'
step rmdir-full sh -c 'mkdir -p i/j && rmdir i'
step unlink-dir sh -c 'mkdir -p k && unlink k'
step long-name touch "$(printf 'n%.0s' $(seq 256))"
step max-name touch "$(printf 'n%.0s' $(seq 255))"
step fifo sh -c 'mkfifo p && stat -c "%F %a" p'
step symlink-own sh -c 'ln -s nowhere s && readlink s && stat -c "%F" s'
