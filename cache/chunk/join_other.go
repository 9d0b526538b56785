//go:build !amd64

package chunk

// No vector loops here: joinPlanes joins every element.
func joinPlanes2Fast(dst, p0, p1 []byte, n int) int         { return 0 }
func joinPlanes4Fast(dst, p0, p1, p2, p3 []byte, n int) int { return 0 }
