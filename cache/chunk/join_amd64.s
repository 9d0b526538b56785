#include "textflag.h"

// func joinPlanes2SSE2(dst, p0, p1 *byte, n int)
TEXT ·joinPlanes2SSE2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ p0+8(FP), SI
	MOVQ p1+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $4, CX
	JZ   done

loop:
	MOVOU (SI), X0
	MOVOU (DX), X1
	MOVO  X0, X2
	PUNPCKLBW X1, X0 // elements 0-7: p0[i] | p1[i]<<8
	PUNPCKHBW X1, X2 // elements 8-15
	MOVO  X0, X3
	MOVO  X2, X4
	PSRLW $1, X0     // rotate each 16-bit lane right by one
	PSLLW $15, X3
	POR   X3, X0
	PSRLW $1, X2
	PSLLW $15, X4
	POR   X4, X2
	MOVOU X0, (DI)
	MOVOU X2, 16(DI)
	ADDQ  $16, SI
	ADDQ  $16, DX
	ADDQ  $32, DI
	DECQ  CX
	JNZ   loop

done:
	RET

// func joinPlanes4SSE2(dst, p0, p1, p2, p3 *byte, n int)
TEXT ·joinPlanes4SSE2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ p0+8(FP), SI
	MOVQ p1+16(FP), DX
	MOVQ p2+24(FP), R8
	MOVQ p3+32(FP), R9
	MOVQ n+40(FP), CX
	SHRQ $4, CX
	JZ   done4

loop4:
	MOVOU (SI), X0
	MOVOU (DX), X1
	MOVOU (R8), X2
	MOVOU (R9), X3
	MOVO  X0, X4
	PUNPCKLBW X1, X0 // elements 0-7, bytes 0 and 1
	PUNPCKHBW X1, X4 // elements 8-15, bytes 0 and 1
	MOVO  X2, X5
	PUNPCKLBW X3, X2 // elements 0-7, bytes 2 and 3
	PUNPCKHBW X3, X5 // elements 8-15, bytes 2 and 3
	MOVO  X0, X1
	PUNPCKLWL X2, X0 // elements 0-3
	PUNPCKHWL X2, X1 // elements 4-7
	MOVO  X4, X3
	PUNPCKLWL X5, X4 // elements 8-11
	PUNPCKHWL X5, X3 // elements 12-15
	// rotate each 32-bit lane right by one
	MOVO  X0, X6
	PSRLL $1, X0
	PSLLL $31, X6
	POR   X6, X0
	MOVO  X1, X6
	PSRLL $1, X1
	PSLLL $31, X6
	POR   X6, X1
	MOVO  X4, X6
	PSRLL $1, X4
	PSLLL $31, X6
	POR   X6, X4
	MOVO  X3, X6
	PSRLL $1, X3
	PSLLL $31, X6
	POR   X6, X3
	MOVOU X0, (DI)
	MOVOU X1, 16(DI)
	MOVOU X4, 32(DI)
	MOVOU X3, 48(DI)
	ADDQ  $16, SI
	ADDQ  $16, DX
	ADDQ  $16, R8
	ADDQ  $16, R9
	ADDQ  $64, DI
	DECQ  CX
	JNZ   loop4

done4:
	RET
