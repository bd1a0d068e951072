// Parley's build of ggml's CPU backend puts this file in place of llama.cpp's
// ggml/src/ggml-cpu/llamafile/sgemm.cpp, renamed there to sgemm-upstream.inc
// (scripts/build-cpu-kernels.mjs). It routes products of Q8_0 or Q5_0 weights with Q8_0
// activations to Parley's kernel (q8_0-gemm.inc), whatever the number of columns, and
// everything else to llama.cpp's own code, unchanged. ggml offers llamafile_sgemm every matrix product: first with the
// activations in F32 (never a Q8_0 x Q8_0 product), again after quantizing them to Q8_0.
#define llamafile_sgemm llamafile_sgemm_upstream
#include "sgemm-upstream.inc"
#undef llamafile_sgemm

#include "q8_0-gemm.inc"

extern "C" bool llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                                const void * A, int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc,
                                int Atype, int Btype, int Ctype) {
#ifdef PARLEY_Q8_0_GEMM
    if (Btype == GGML_TYPE_Q8_0 && Ctype == GGML_TYPE_F32 && n >= 1) {
        if (Atype == GGML_TYPE_Q8_0) {
            parley_q8_0::gemm(params->ith, params->nth, m, n, k, (const block_q8_0 *) A, lda, (const block_q8_0 *) B, ldb,
                              (float *) C, ldc);
            return true;
        }
        if (Atype == GGML_TYPE_Q5_0) {
            parley_q8_0::gemm(params->ith, params->nth, m, n, k, (const block_q5_0 *) A, lda, (const block_q8_0 *) B, ldb,
                              (float *) C, ldc);
            return true;
        }
    }
#endif
    return llamafile_sgemm_upstream(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype);
}
