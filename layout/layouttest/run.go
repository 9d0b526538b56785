package layouttest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
)

// TrainingRun is a safetensors file as a training run saves it after each
// of n steps: tensors BF16 tensors of elems weights (normal, scale 0.04),
// every weight moving by about lr at each step, as an optimizer moves it.
// The same seed gives the same run.
func TrainingRun(seed int64, n, tensors, elems int, lr float64) [][]byte {
	r := rand.New(rand.NewSource(seed))
	w := make([][]float64, tensors)
	for i := range w {
		w[i] = make([]float64, elems)
		for j := range w[i] {
			w[i][j] = r.NormFloat64() * 0.04
		}
	}
	var out [][]byte
	for range n {
		var ts []Tensor
		for i, ws := range w {
			data := make([]byte, 2*len(ws))
			for j, v := range ws {
				binary.LittleEndian.PutUint16(data[2*j:], uint16(math.Float32bits(float32(v))>>16))
				ws[j] = v - lr*math.Tanh(r.NormFloat64())
			}
			ts = append(ts, Tensor{Name: fmt.Sprintf("layer.%d.weight", i), DType: "BF16", Shape: []int64{int64(elems)}, Data: data})
		}
		out = append(out, Safetensors(nil, ts...))
	}
	return out
}
