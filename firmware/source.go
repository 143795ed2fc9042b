package firmware

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// GitVersion is the image version for the sources in root: `git describe --always
// --dirty` (as the Makefile's VERSION), or "dev" outside a git checkout.
func GitVersion(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// SourceDateEpoch is the build date for reproducible builds: $SOURCE_DATE_EPOCH when set,
// else the time of the last commit in root, else 0.
func SourceDateEpoch(ctx context.Context, root string) (int64, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
		}
		return n, nil
	}
	cmd := exec.CommandContext(ctx, "git", "log", "-1", "--format=%ct")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return 0, nil
	}
	return n, nil
}
