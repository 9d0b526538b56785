package chunk

// The plane joins of joinPlanes, sixteen elements an iteration with SSE2,
// which every amd64 has: the byte interleave and the rotate of sixteen
// bf16 elements in eleven instructions, where the word-at-a-time join took
// about sixty. The bf16 join was a quarter of the daemon's CPU on a cold
// read; it now runs at 28.7 GB/s instead of 3.0 (BenchmarkJoinPlanes).
// n is a multiple of 16.
//
//go:noescape
func joinPlanes2SSE2(dst, p0, p1 *byte, n int)

//go:noescape
func joinPlanes4SSE2(dst, p0, p1, p2, p3 *byte, n int)

// joinPlanes2Fast joins what the vector loop can of n elements and returns
// how many it joined.
func joinPlanes2Fast(dst, p0, p1 []byte, n int) int {
	m := n &^ 15
	if m == 0 {
		return 0
	}
	_, _, _ = dst[2*m-1], p0[m-1], p1[m-1] // the bytes the assembly reads and writes
	joinPlanes2SSE2(&dst[0], &p0[0], &p1[0], m)
	return m
}

// joinPlanes4Fast is joinPlanes2Fast for four planes.
func joinPlanes4Fast(dst, p0, p1, p2, p3 []byte, n int) int {
	m := n &^ 15
	if m == 0 {
		return 0
	}
	_, _, _, _, _ = dst[4*m-1], p0[m-1], p1[m-1], p2[m-1], p3[m-1]
	joinPlanes4SSE2(&dst[0], &p0[0], &p1[0], &p2[0], &p3[0], m)
	return m
}
