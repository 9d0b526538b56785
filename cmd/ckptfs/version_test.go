package main

import (
	"bytes"
	"regexp"
	"testing"
)

// The Python wheel's builder reads VERSION too, and takes only this form.
func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	a := &app{args: []string{"--version"}, stdout: &out, stderr: &out}
	if err := a.rootCmd(a.lsCmd()).Execute(); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ckptfs version \d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?\n$`).MatchString(out.String()) {
		t.Fatalf("--version printed %q", out.String())
	}
}
