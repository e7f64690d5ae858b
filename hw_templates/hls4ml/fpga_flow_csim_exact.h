// fpga_flow: exact integer evaluation of hls4ml's dense kernel for C simulation.
//
// Force-included (g++ -include) into the csim build only; synthesis never sees
// it and uses hls4ml's nnet::dense_latency unchanged. The convolutions of an
// io_stream design spend ~90% of csim time in ap_fixed products and sums; this
// header specialises nnet::DenseLatency for ap_fixed/ap_ufixed inputs and, when
// the types allow an exact shortcut, computes the same values on the raw
// two's-complement codes with 64-bit integers:
//   * every product and the bias convert to accum_t without dropping bits
//     (accum frac >= data frac + weight frac, accum frac >= bias frac);
//   * accum_t wraps (AP_WRAP, no saturation bits), so summing in uint64 and
//     wrapping once to accum_t's width equals wrapping after every addition
//     (both are arithmetic modulo 2^width);
//   * all widths fit the 64-bit evaluation.
// Otherwise it calls hls4ml's dense_latency. The flow proves the two builds
// equal on every run (a subset through the stock build, compared with ==).
#ifndef FPGA_FLOW_CSIM_EXACT_H_
#define FPGA_FLOW_CSIM_EXACT_H_

#include <cstdint>

#include "nnet_utils/nnet_dense.h"

namespace fpga_flow {

template <class T> struct fixed_traits { static const bool ok = false; };
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> struct fixed_traits<ap_fixed<W, I, Q, O, N>> {
    static const bool ok = true, is_signed = true, wraps = (O == AP_WRAP && N == 0);
    static const int width = W, frac = W - I;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> struct fixed_traits<ap_ufixed<W, I, Q, O, N>> {
    static const bool ok = true, is_signed = false, wraps = (O == AP_WRAP && N == 0);
    static const int width = W, frac = W - I;
};

template <class data_T, class CONFIG_T> struct exact_ok {
    typedef fixed_traits<data_T> D;
    typedef fixed_traits<typename CONFIG_T::weight_t> Wt;
    typedef fixed_traits<typename CONFIG_T::bias_t> B;
    typedef fixed_traits<typename CONFIG_T::accum_t> A;
    static const bool value = D::ok && Wt::ok && B::ok && A::ok && A::is_signed && A::wraps &&
                              A::frac >= D::frac + Wt::frac && A::frac >= B::frac && D::width <= 31 &&
                              Wt::width <= 31 && D::width + Wt::width <= 62 && A::width <= 64 && B::width <= 63;
};

template <class T> inline int64_t raw(const T &v) { return (int64_t)v.V.get_VAL(); }

template <class data_T, class res_T, class CONFIG_T>
void dense_exact(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                 typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                 typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
    typedef typename CONFIG_T::accum_t acc_t;
    typedef exact_ok<data_T, CONFIG_T> ok;
    const int prod_shift = ok::A::frac - ok::D::frac - ok::Wt::frac;
    const int bias_shift = ok::A::frac - ok::B::frac;
    // Weight codes, read once from the (constant) weight array of this layer.
    static int64_t wcode[CONFIG_T::n_in * CONFIG_T::n_out];
    static const typename CONFIG_T::weight_t *cached = 0;
    if (cached != weights) {
        for (unsigned i = 0; i < CONFIG_T::n_in * CONFIG_T::n_out; i++) wcode[i] = raw(weights[i]);
        cached = weights;
    }
    uint64_t sum[CONFIG_T::n_out];
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) sum[j] = 0;
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        const int64_t d = raw(data[i]);
        if (d == 0) continue;  // a zero input adds nothing (exactly)
        const int64_t *w = wcode + i * CONFIG_T::n_out;
        for (unsigned j = 0; j < CONFIG_T::n_out; j++) sum[j] += (uint64_t)(d * w[j]);
    }
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        const uint64_t v = (sum[j] << prod_shift) + ((uint64_t)raw(biases[j]) << bias_shift);
        acc_t a;
        a.V = ap_private<ok::A::width, true>((int64_t)v);  // wraps to accum_t's width
        res[j] = nnet::cast<data_T, res_T, CONFIG_T>(a);
    }
}

}  // namespace fpga_flow

namespace nnet {

#define FPGA_FLOW_EXACT_DENSE(FIXED)                                                                              \
    template <int W, int I, ap_q_mode Q, ap_o_mode O, int N, class res_T, typename CONFIG_T>                     \
    class DenseLatency<FIXED<W, I, Q, O, N>, res_T, CONFIG_T>                                                    \
        : public DenseKernel<FIXED<W, I, Q, O, N>, res_T, CONFIG_T> {                                            \
      public:                                                                                                     \
        typedef FIXED<W, I, Q, O, N> data_T;                                                                      \
        static void dense(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],                               \
                          typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],                 \
                          typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {                                   \
            if constexpr (fpga_flow::exact_ok<data_T, CONFIG_T>::value)                                         \
                fpga_flow::dense_exact<data_T, res_T, CONFIG_T>(data, res, weights, biases);                     \
            else                                                                                                  \
                dense_latency<data_T, res_T, CONFIG_T>(data, res, weights, biases);                              \
        }                                                                                                         \
    };
FPGA_FLOW_EXACT_DENSE(ap_fixed)
FPGA_FLOW_EXACT_DENSE(ap_ufixed)
#undef FPGA_FLOW_EXACT_DENSE

}  // namespace nnet

#endif
