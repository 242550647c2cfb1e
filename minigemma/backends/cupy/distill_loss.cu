// distill_loss.cu — the distillation loss of each row and its gradient, fused, in float64.
//
// Reference: minigemma.training.losses.distillation_loss_and_grad. Per row t of the student
// logits s and teacher logits u [T, V], temperature τ:
//
//     z_S = (s − max s) / τ,   z_T = (u − max u) / τ,   e_S = exp(z_S),   e_T = exp(z_T)
//     row_loss[t] = −Σ_x P_T(x) log P_S(x) = log Σ e_S − Σ_x e_T(x) · z_S(x) / Σ e_T
//     grad[t, x]  = (e_S(x) / Σ e_S − e_T(x) / Σ e_T) · grad_scale       grad_scale = 1 / (τ · T)
//
// Terms with e_T(x) = 0 add 0 to the cross sum (0 · log 0 = 0, even where z_S = −∞). The host
// adds the row losses and divides by T. A row holding NaN or +inf, or no finite entry, gets
// status BAD_STUDENT / BAD_TEACHER and is left unwritten: the host raises the reference's error.
//
// Launch: block (DISTILL_THREADS), grid (T): one thread block per row, three passes over it
// (maxima; sums; gradient, with the exponentials computed again rather than stored).
// Arrays (C-contiguous): student, teacher, grad float32 [T, V]; row_loss float64 [T];
// status int32 [T].
#include "common.cuh"

#define DISTILL_THREADS 256
#define ROW_OK 0
#define BAD_STUDENT 1
#define BAD_TEACHER 2

extern "C" __global__ void distill_rows(const float* __restrict__ student,
                                        const float* __restrict__ teacher,
                                        float* __restrict__ grad, double* __restrict__ row_loss,
                                        int* __restrict__ status, int V, double temperature,
                                        double grad_scale)
{
    const long long t = blockIdx.x;
    const float* s_row = student + t * V;
    const float* u_row = teacher + t * V;
    const double inf = (double)positive_infinity();

    double max_s = -inf, max_u = -inf;  // pass 1: maxima, and whether a row holds NaN or +inf
    int bad_s = 0, bad_u = 0;
    for (int x = thread_rank(); x < V; x += block_threads()) {
        const double s = s_row[x], u = u_row[x];
        bad_s |= (s != s) | (s == inf);
        bad_u |= (u != u) | (u == inf);
        max_s = s > max_s ? s : max_s;
        max_u = u > max_u ? u : max_u;
    }
    max_s = block_max(max_s);
    max_u = block_max(max_u);
    bad_s = block_max(bad_s) || max_s == -inf;
    bad_u = block_max(bad_u) || max_u == -inf;
    if (bad_s || bad_u) {  // the same for the whole block
        if (thread_rank() == 0)
            status[t] = bad_s ? BAD_STUDENT : BAD_TEACHER;
        return;
    }

    double sum_s = 0.0, sum_u = 0.0, cross = 0.0;  // pass 2: the sums
    for (int x = thread_rank(); x < V; x += block_threads()) {
        const double z_s = ((double)s_row[x] - max_s) / temperature;
        const double e_u = exp(((double)u_row[x] - max_u) / temperature);
        sum_s += exp(z_s);
        sum_u += e_u;
        if (e_u > 0.0)
            cross += e_u * z_s;
    }
    sum_s = block_sum(sum_s);
    sum_u = block_sum(sum_u);
    cross = block_sum(cross);
    if (thread_rank() == 0) {
        row_loss[t] = log(sum_s) - cross / sum_u;
        status[t] = ROW_OK;
    }

    for (int x = thread_rank(); x < V; x += block_threads()) {  // pass 3: the gradient row
        const double p_s = exp(((double)s_row[x] - max_s) / temperature) / sum_s;
        const double p_u = exp(((double)u_row[x] - max_u) / temperature) / sum_u;
        grad[t * V + x] = (float)((p_s - p_u) * grad_scale);
    }
}
