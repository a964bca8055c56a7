// Prints, for values on and beside every native-histogram bucket bound at
// every schema from -4 to 8, the bucket index client_golang gives them:
// one line "schema value-bits index" each (the bits in hex), read by the
// core's differential test (`make golang-native`).
package main

import (
	"bufio"
	"fmt"
	"math"
	"math/rand"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// index observes value in a fresh native histogram of the given schema and
// returns the index of the one bucket it lands in.
func index(schema int32, value float64) int32 {
	histogram := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "probe",
		// Just above 2^(2^-schema): the finest schema whose factor is at most this.
		NativeHistogramBucketFactor:  math.Exp2(math.Exp2(float64(-schema))) * (1 + 1e-9),
		NativeHistogramZeroThreshold: prometheus.NativeHistogramZeroThresholdZero,
	})
	histogram.Observe(value)
	metric := &dto.Metric{}
	if err := histogram.Write(metric); err != nil {
		panic(err)
	}
	written := metric.GetHistogram()
	if written.GetSchema() != schema {
		panic(fmt.Sprintf("asked for schema %d, got %d", schema, written.GetSchema()))
	}
	spans := written.GetPositiveSpan()
	if len(spans) != 1 || spans[0].GetLength() != 1 {
		panic(fmt.Sprintf("%v at schema %d: spans %v", value, schema, spans))
	}
	return spans[0].GetOffset()
}

// neighbours are value and the floats up to three steps either side of it.
func neighbours(value float64) []float64 {
	values := []float64{value}
	below, above := value, value
	for step := 0; step < 3; step++ {
		below = math.Nextafter(below, 0)
		above = math.Nextafter(above, math.Inf(1))
		values = append(values, below, above)
	}
	return values
}

func main() {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	random := rand.New(rand.NewSource(20261207))
	for schema := int32(-4); schema <= 8; schema++ {
		var values []float64
		// Powers of two across the whole range, subnormals included.
		for exponent := -1074; exponent <= 1023; exponent++ {
			values = append(values, neighbours(math.Ldexp(1, exponent))...)
		}
		values = append(values, math.MaxFloat64)
		// Every bound of a power of two, in a few powers of two and at the ends.
		if schema > 0 {
			perPower := 1 << schema
			for _, exponent := range []int{-1021, -30, -3, -1, 0, 1, 2, 7, 30, 1023} {
				for k := 0; k < perPower; k++ {
					bound := math.Ldexp(math.Exp2(float64(k)/float64(perPower)), exponent)
					values = append(values, neighbours(bound)...)
				}
			}
		}
		for draw := 0; draw < 2000; draw++ {
			values = append(values, math.Exp(random.Float64()*60-30))
		}
		for _, value := range values {
			if value > 0 && !math.IsInf(value, 0) {
				fmt.Fprintf(out, "%d %x %d\n", schema, math.Float64bits(value), index(schema, value))
			}
		}
	}
}
