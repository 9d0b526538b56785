#!/bin/sh
# Fixtures of posix_rules.sh, made as root in folder $1: files and folders
# of root's that the rules try as their owner and as another user.
set -eu
umask 022
mkdir "$1"
cd "$1"
chmod 0777 .
mkdir sticky && chmod 1777 sticky
touch sticky/theirs sticky/theirs2 && chmod 0666 sticky/theirs sticky/theirs2
mkdir sgid && chgrp 100 sgid && chmod 2777 sgid
touch theirs writable && chmod 0666 theirs writable
touch readonly theirs-ro && chmod 0644 readonly theirs-ro
echo secret > private && chmod 0600 private && setfattr -n user.kept -v v private
mkdir closed && chmod 0755 closed
for f in suid-w sgid-nx suid-t suid-o suid-c; do echo data > $f; done
chmod 6777 suid-w suid-t suid-o suid-c && chmod 2766 sgid-nx
