// dcme-caffe: max-unpooling by pooling indices, GPU (see include/caffe/layers/unpool_layer.hpp).
#include <vector>

#include "caffe/layers/unpool_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// One thread per element of bottom[0]: out[plane, mask[i]] = feat[i]. An index outside [0, out_plane) (or not an
// integer) is not written; the first such index seen is reported through bad = (1, index).
template <typename Dtype>
__global__ void UnpoolForward(const int n, const Dtype* feat, const Dtype* mask, const int in_plane,
                              const int out_plane, Dtype* out, Dtype* bad) {
  CUDA_KERNEL_LOOP(i, n) {
    const Dtype m = mask[i];
    const int k = static_cast<int>(m);
    if (k >= 0 && k < out_plane && m == k) {
      out[(i / in_plane) * out_plane + k] = feat[i];
    } else {
      bad[1] = m;
      bad[0] = 1;
    }
  }
}

// One thread per element of bottom[0]: diff[i] = top_diff[plane, mask[i]] (indices checked by Forward).
template <typename Dtype>
__global__ void UnpoolBackward(const int n, const Dtype* top_diff, const Dtype* mask, const int in_plane,
                               const int out_plane, Dtype* diff) {
  CUDA_KERNEL_LOOP(i, n) {
    diff[i] = top_diff[(i / in_plane) * out_plane + static_cast<int>(mask[i])];
  }
}

template <typename Dtype>
void UnpoolLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const int n = bottom[0]->count();
  Dtype* out = top[0]->mutable_gpu_data();
  Dtype* bad = bad_index_.mutable_gpu_data();
  caffe_gpu_set(top[0]->count(), Dtype(0), out);
  caffe_gpu_set(2, Dtype(0), bad);
  // NOLINT_NEXT_LINE(whitespace/operators)
  UnpoolForward<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
      n, bottom[0]->gpu_data(), bottom[1]->gpu_data(), in_plane_, out_plane_, out, bad);
  CUDA_POST_KERNEL_CHECK;
  const Dtype* flag = bad_index_.cpu_data();  // 8 bytes back to the host: the kernel's verdict on the indices
  if (flag[0] != 0) FailOnIndex(flag[1]);
}

template <typename Dtype>
void UnpoolLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
                                      const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[0]) {
    const int n = bottom[0]->count();
    // NOLINT_NEXT_LINE(whitespace/operators)
    UnpoolBackward<Dtype><<<CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS>>>(
        n, top[0]->gpu_diff(), bottom[1]->gpu_data(), in_plane_, out_plane_, bottom[0]->mutable_gpu_diff());
    CUDA_POST_KERNEL_CHECK;
  }
  for (int i = 1; i < 3; ++i) {  // pooling indices and reference size: no gradient
    if (propagate_down[i]) caffe_gpu_set(bottom[i]->count(), Dtype(0), bottom[i]->mutable_gpu_diff());
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(UnpoolLayer);

}  // namespace caffe
