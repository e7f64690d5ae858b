// fpga_flow fixed-point LogSoftmax over the last axis (io_parallel and io_stream).
//
// Integer arithmetic on codes, the same as fpga_flow/log_softmax.py (forward_codes), which also generates
// CONFIG_T's constants and tables (hw_templates/hls4ml/fpga_flow_log_softmax_config.h.j2):
//   u_j = max - x_j                      exact, in units of the input LSB 2^-in_frac
//   i_j = round_half_up(u_j 2^-idx_shift)  (i_j = u_j when idx_shift = 0)
//   e_j = exp_table(i_j)                 round(exp(-i_j 2^-(in_frac - idx_shift)) 2^exp_frac); 0 from exp_size on
//   s   = sum_j e_j                      exact, sum_width bits, s >= 2^exp_frac
//   k   = leading one of s;  r = round((s - 2^k) 2^(mant_bits - k))      r in [0, 2^mant_bits]
//   lse = ln2k_table(k - exp_frac) + ln_table(r)                         on the grid 2^-log_frac
//   y_j = round_half_up(-u_j 2^(log_frac - in_frac) - lse, to the grid 2^-out_frac)
#ifndef NNET_FPGA_FLOW_LOG_SOFTMAX_H_
#define NNET_FPGA_FLOW_LOG_SOFTMAX_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"
#include "nnet_common.h"

namespace fpga_flow {

struct log_softmax_config {
    // see fpga_flow_log_softmax_config.h.j2 for what a layer's config defines
};

template <class in_T, class out_T, typename CONFIG_T>
void log_softmax_core(const in_T x[CONFIG_T::n_in], out_T y[CONFIG_T::n_in]) {
    #pragma HLS INLINE
    typedef ap_fixed<CONFIG_T::in_width + 1, CONFIG_T::in_int + 1> diff_t;  // max - x, exact
    typedef ap_uint<CONFIG_T::in_width> u_t;
    typedef ap_uint<CONFIG_T::in_width + 1> idx_t;
    typedef ap_uint<CONFIG_T::sum_width + 1> sum_t;
    typedef ap_int<CONFIG_T::y_width> y_t;

    in_T m = x[0];
LogSoftmaxMax:
    for (unsigned j = 1; j < CONFIG_T::n_in; j++) {
        #pragma HLS UNROLL
        if (x[j] > m) m = x[j];
    }

    u_t u[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=u complete
    sum_t s = 0;
LogSoftmaxExp:
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS UNROLL
        diff_t d = m - x[j];
        u[j] = d.range(CONFIG_T::in_width - 1, 0);
        idx_t i = u[j];
        if (CONFIG_T::idx_shift > 0)
            i = (i + (idx_t(1) << (CONFIG_T::idx_shift > 0 ? CONFIG_T::idx_shift - 1 : 0))) >> CONFIG_T::idx_shift;
        if (i < CONFIG_T::exp_size) s += CONFIG_T::exp_table(i);
    }

    unsigned k = CONFIG_T::exp_frac;  // s >= 2^exp_frac: the maximum contributes exactly that
LogSoftmaxLeadingOne:
    for (unsigned b = CONFIG_T::exp_frac + 1; b < CONFIG_T::sum_width; b++) {
        #pragma HLS UNROLL
        if (s[b]) k = b;
    }
    const unsigned sh = k - CONFIG_T::mant_bits;  // >= 1 by construction (exp_frac > mant_bits)
    sum_t r = ((s - (sum_t(1) << k)) + (sum_t(1) << (sh - 1))) >> sh;
    y_t lse = y_t(CONFIG_T::ln2k_table(k - CONFIG_T::exp_frac)) + y_t(CONFIG_T::ln_table(r));

LogSoftmaxOut:
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS UNROLL
        y_t yl = -(y_t(u[j]) << (CONFIG_T::log_frac - CONFIG_T::in_frac)) - lse;
        y_t yo = (yl + (y_t(1) << (CONFIG_T::log_frac - CONFIG_T::out_frac - 1))) >> (CONFIG_T::log_frac - CONFIG_T::out_frac);
        out_T o;
        o.range(CONFIG_T::out_width - 1, 0) = yo.range(CONFIG_T::out_width - 1, 0);
        y[j] = o;
    }
}

// io_parallel
template <class data_T, class res_T, typename CONFIG_T>
void log_softmax(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    log_softmax_core<data_T, res_T, CONFIG_T>(data, res);
}

// io_stream: gather the n_in values, compute, scatter
template <class data_T, class res_T, typename CONFIG_T>
void log_softmax(hls::stream<data_T> &data, hls::stream<res_T> &res) {
    typename data_T::value_type x[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=x complete
    typename res_T::value_type y[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=y complete
LogSoftmaxRead:
    for (unsigned i = 0; i < CONFIG_T::n_in / data_T::size; i++) {
        #pragma HLS PIPELINE
        data_T pack = data.read();
        for (unsigned j = 0; j < data_T::size; j++) {
            #pragma HLS UNROLL
            x[i * data_T::size + j] = pack[j];
        }
    }
    log_softmax_core<typename data_T::value_type, typename res_T::value_type, CONFIG_T>(x, y);
LogSoftmaxWrite:
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        #pragma HLS PIPELINE
        res_T pack;
        PRAGMA_DATA_PACK(pack)
        for (unsigned j = 0; j < res_T::size; j++) {
            #pragma HLS UNROLL
            pack[j] = y[i * res_T::size + j];
        }
        res.write(pack);
    }
}

} // namespace fpga_flow

#endif
