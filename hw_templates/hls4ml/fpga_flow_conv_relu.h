// fpga_flow: fused 2-D convolution + ReLU + requantization, one streaming kernel (io_stream).
//
// hls4ml emits a convolution as one function writing its accumulators to a stream, and the ReLU
// (with the following quantizer folded into its result type) as a second function reading that
// stream. This kernel does both in one pass over the input: for every output pixel it computes
// the accumulators with the layer's own dense kernel (CONFIG_T::mult_config, so the exact csim
// specialisation applies), then writes max(acc, 0) cast to the quantized result type. One function,
// one output stream of narrow (e.g. 4-bit) values instead of two functions and a stream of wide
// accumulators between them.
//
// Arithmetic, value for value, is hls4ml's: the accumulators are CONFIG_T::accum_t (the flow sets
// them exact), `acc > 0 ? (res) acc : 0` is nnet::relu's rule, and the cast to res_T::value_type
// rounds and saturates as that type says (the Brevitas quantizer). The flow verifies the design
// with == either way (fused and `--no-fuse`).
//
// Input pixels arrive in raster order, channels packed in one stream word (channels-last); the
// line buffer keeps filt_height-1 rows. No padding here: hls4ml puts a ZeroPadding layer in front.
#ifndef FPGA_FLOW_CONV_RELU_H_
#define FPGA_FLOW_CONV_RELU_H_

#include "hls_stream.h"
#include "nnet_common.h"
#include "nnet_conv_stream.h"
#include "nnet_dense.h"
#include <cassert>

namespace fpga_flow {

template <class data_T, class res_T, typename CONFIG_T>
void conv_relu_pixel_2d(
    const data_T &in_elem,
    ap_shift_reg<typename data_T::value_type, CONFIG_T::in_width> line_buffer[MAX(CONFIG_T::filt_height - 1, 1)]
                                                                             [CONFIG_T::n_chan],
    hls::stream<res_T> &res_stream,
    typename CONFIG_T::weight_t weights[CONFIG_T::kernel_size * CONFIG_T::n_chan * CONFIG_T::n_filt],
    typename CONFIG_T::bias_t biases[CONFIG_T::n_filt]) {
    #pragma HLS INLINE OFF
    typedef typename CONFIG_T::accum_t acc_t;
    typedef typename res_T::value_type out_t;

    // position of this input pixel, and where it stands in the stride pattern
    static int x = 0, y = 0, sx = 0, sy = 0;
    const int last_x = CONFIG_T::filt_width - 1, last_y = CONFIG_T::filt_height - 1;

    static typename data_T::value_type window[CONFIG_T::filt_height * CONFIG_T::filt_width * CONFIG_T::n_chan];
    #pragma HLS ARRAY_PARTITION variable = window complete

    nnet::shift_line_buffer<data_T, CONFIG_T>(in_elem, line_buffer, window);

    if (sx == last_x && sy == last_y && y >= last_y && x >= last_x) {  // a full window: one output pixel
        acc_t acc[CONFIG_T::n_filt];
        #pragma HLS ARRAY_PARTITION variable = acc complete
        CONFIG_T::mult_config::template kernel<typename data_T::value_type, acc_t,
                                               typename CONFIG_T::mult_config>::dense(window, acc, weights, biases);
        res_T out;
        PRAGMA_DATA_PACK(out)
    ReluQuant:
        for (unsigned f = 0; f < CONFIG_T::n_filt; f++) {
            #pragma HLS UNROLL
            out[f] = acc[f] > 0 ? (out_t)acc[f] : (out_t)0;
        }
        res_stream.write(out);
    }

    if (x + 1 == (int)CONFIG_T::in_width) {
        x = 0;
        sx = 0;
        if (y + 1 == (int)CONFIG_T::in_height) {
            y = 0;
            sy = 0;
        } else {
            y++;
            sy = sy == last_y ? sy - (int)CONFIG_T::stride_height + 1 : sy + 1;
        }
    } else {
        x++;
        sx = sx == last_x ? sx - (int)CONFIG_T::stride_width + 1 : sx + 1;
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void conv_2d_relu_cl(
    hls::stream<data_T> &data, hls::stream<res_T> &res,
    typename CONFIG_T::weight_t weights[CONFIG_T::filt_height * CONFIG_T::filt_width * CONFIG_T::n_chan * CONFIG_T::n_filt],
    typename CONFIG_T::bias_t biases[CONFIG_T::n_filt]) {
    assert(CONFIG_T::pad_top == 0 && CONFIG_T::pad_bottom == 0 && CONFIG_T::pad_left == 0 && CONFIG_T::pad_right == 0);
    assert(CONFIG_T::filt_height > 1);

    static ap_shift_reg<typename data_T::value_type, CONFIG_T::in_width> line_buffer[MAX(CONFIG_T::filt_height - 1, 1)]
                                                                                    [CONFIG_T::n_chan];
    #pragma HLS ARRAY_PARTITION variable = line_buffer complete dim = 2

Rows:
    for (unsigned i = 0; i < CONFIG_T::in_height; i++) {
    Cols:
        for (unsigned j = 0; j < CONFIG_T::in_width; j++) {
            #pragma HLS LOOP_FLATTEN
            #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
            conv_relu_pixel_2d<data_T, res_T, CONFIG_T>(data.read(), line_buffer, res, weights, biases);
        }
    }
}

}  // namespace fpga_flow

#endif
