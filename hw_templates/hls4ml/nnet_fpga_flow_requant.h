// fpga_flow Requant: integer accumulator -> activation code by per-channel thresholds.
//   code = base[c] + dir[c] * #(acc >= T[c][k]),  k = 0 .. n_thr-1
// The thresholds come from fpga_flow/requant.py: found by bisection on the float32 chain Brevitas runs
// (scale, bias, BatchNorm, ReLU, quantizer) and checked against it, so the comparison is exact integer
// arithmetic: no rescale, no float. Unused entries hold a value above every reachable accumulator.
#ifndef NNET_FPGA_FLOW_REQUANT_H_
#define NNET_FPGA_FLOW_REQUANT_H_

#include "hls_stream.h"
#include "nnet_common.h"

namespace fpga_flow {

struct requant_config {
    static const unsigned n_in = 1;    // elements per call (io_parallel) or per image (io_stream)
    static const unsigned n_chan = 1;  // channels: the innermost axis
    static const unsigned n_thr = 1;   // thresholds per channel
    static const unsigned count_width = 1;
};

template <class acc_T, class out_T, typename CONFIG_T> out_T requant_value(acc_T acc, unsigned c) {
    #pragma HLS INLINE
    // the accumulator holds an integer (its type has no fraction bits): compare it as one; the upper
    // bits of the 64-bit value are copies of its sign and are optimized away in synthesis
    const long long a = acc.to_int64();
    ap_uint<CONFIG_T::count_width> n = 0;
    for (unsigned k = 0; k < CONFIG_T::n_thr; k++) {
        #pragma HLS UNROLL
        if (a >= CONFIG_T::threshold(c, k))
            n++;
    }
    typename CONFIG_T::code_t code = CONFIG_T::base(c);
    if (CONFIG_T::decreasing(c))
        code -= n;
    else
        code += n;
    return (out_T)code;
}

// io_parallel
template <class data_T, class res_T, typename CONFIG_T>
void requant(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        res[i] = requant_value<data_T, res_T, CONFIG_T>(data[i], i % CONFIG_T::n_chan);
    }
}

// io_stream: one pack (e.g. one pixel's channels) per read
template <class data_T, class res_T, typename CONFIG_T>
void requant(hls::stream<data_T> &data, hls::stream<res_T> &res) {
RequantLoop:
    for (unsigned i = 0; i < CONFIG_T::n_in / data_T::size; i++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned j = 0; j < data_T::size; j++) {
            #pragma HLS UNROLL
            out[j] = requant_value<typename data_T::value_type, typename res_T::value_type, CONFIG_T>(
                in[j], (i * data_T::size + j) % CONFIG_T::n_chan);
        }
        res.write(out);
    }
}

} // namespace fpga_flow

#endif
