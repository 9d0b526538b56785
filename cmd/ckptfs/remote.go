package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ckptfs/ckptfs/cache/remote"
	"github.com/ckptfs/ckptfs/cache/store"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

// remoteFlags are the flags that say where a bucket is.
type remoteFlags struct{ url, endpoint, credentials, profile string }

func (f *remoteFlags) add(cmd *cobra.Command, required bool) {
	cmd.Flags().StringVar(&f.url, "remote", "", "the bucket: s3://BUCKET/PREFIX")
	cmd.Flags().StringVar(&f.endpoint, "remote-endpoint", "", "S3 endpoint, http://HOST:PORT for MinIO (default $AWS_ENDPOINT_URL, else AWS)")
	cmd.Flags().StringVar(&f.credentials, "remote-credentials", "", "a shared credentials file (~/.aws/credentials format) to read first")
	cmd.Flags().StringVar(&f.profile, "remote-profile", "", "the profile in credentials files (default $AWS_PROFILE, else default)")
	if required {
		cmd.MarkFlagRequired("remote")
	}
}

func (f *remoteFlags) open(ctx context.Context) (*remote.Remote, error) {
	return remote.Open(ctx, remote.Config{URL: f.url, Endpoint: f.endpoint, CredentialsFile: f.credentials, Profile: f.profile})
}

const remoteHelp = `
The bucket holds chunks/HASH objects (chunks as stored: compressed and
checksummed, named by the BLAKE3 hash of their content) and one
checkpoints/NAME manifest per checkpoint, written after every chunk it
names; mounts with --remote and push also keep a leases/NAME object per
checkpoint they write, and refuse a checkpoint another store writes.
Credentials are found as the AWS SDKs find them: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; then --remote-credentials; then
the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
~/.aws/credentials, profile AWS_PROFILE or --remote-profile); then an IAM
role (web identity/IRSA, ECS task role, EC2 instance profile; not with
AWS_EC2_METADATA_DISABLED=true). Region and retries come from AWS_REGION
and AWS_MAX_ATTEMPTS.`

func (a *app) pushCmd() *cobra.Command {
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "push NAME --remote s3://BUCKET/PREFIX",
		Short: "Publish a checkpoint of the store in an S3-compatible bucket",
		Long: `Upload checkpoint NAME to the bucket: every chunk the bucket does not hold
yet, each verified against its hash first, then the manifest. A push that
fails leaves the checkpoint unpublished; run it again to finish it.` + remoteHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.transfer(rf, args[0], "push", remote.Push)
		},
	}
	rf.add(cmd, true)
	return cmd
}

func (a *app) pullCmd() *cobra.Command {
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "pull NAME --remote s3://BUCKET/PREFIX",
		Short: "Copy a checkpoint from an S3-compatible bucket into the store",
		Long: `Download checkpoint NAME from the bucket into the store as NAME: every chunk
the store does not hold yet, each verified against its hash, then the files.
NAME appears only once complete; a chunk that fails verification fails the
pull and names the chunk.` + remoteHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.transfer(rf, args[0], "pull", remote.Pull)
		},
	}
	rf.add(cmd, true)
	return cmd
}

type transferFunc func(context.Context, remote.Local, *remote.Remote, string, func(int64)) (*remote.Transfer, error)

// transfer runs a push or pull of NAME, stopping cleanly on Ctrl-C.
func (a *app) transfer(rf remoteFlags, arg, verb string, move transferFunc) error {
	name, err := cleanName(arg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	remote, err := rf.open(ctx)
	if err != nil {
		return err
	}
	return a.withStore(store.Options{}, func(store *store.Store) error {
		bar := a.newProgress(-1, verb+" "+name)
		t, err := move(ctx, store, remote, name, func(n int64) { bar.Add64(n) })
		bar.Finish()
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s %s: %d files, %s; %d of %d chunks moved (%s), the rest already there\n",
			verb, name, t.Files, humanize.IBytes(uint64(t.LogicalBytes)), t.Moved, t.Chunks, humanize.IBytes(uint64(t.MovedBytes)))
		return nil
	})
}
