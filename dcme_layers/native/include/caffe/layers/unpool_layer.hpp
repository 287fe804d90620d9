#ifndef CAFFE_UNPOOL_LAYER_HPP_
#define CAFFE_UNPOOL_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief Max-unpooling by the indices of a MAX PoolingLayer (SegNet's decoder; dcme-caffe).
 *
 * The native twin of the Python layer dcme_layers/unpool.py, with the same semantics. A MAX PoolingLayer with two
 * tops writes, for every pooled element, the index h * W + w of its maximum inside the input (n, c) plane (stored
 * as Dtype). This layer scatters each value of bottom[0] to that position of a zeroed output plane (forward) and
 * gathers the gradient of bottom[0] from the same positions (backward). The output's spatial size comes from
 * bottom[2], the blob that went into the pooling layer: Caffe's ceil-mode pooling maps 340 -> 170 -> 85 -> 43 -> 22,
 * so doubling the pooled size is not the inverse. No LayerParameter field is needed (no caffe.proto change).
 *
 * Bottoms and tops:
 *   bottom[0] features        (N, C, h, w)
 *   bottom[1] pooling indices (N, C, h, w), values in [0, H * W)
 *   bottom[2] reference       (N, C', H, W), only its shape is used
 *   top[0]    unpooled        (N, C, H, W)
 * bottom[1] and bottom[2] get no gradient (their diffs are zeroed if asked for); use propagate_down: false.
 * The pooling must not overlap (kernel == stride, as in SegNet), or backward is not the adjoint of forward.
 */
template <typename Dtype>
class UnpoolLayer : public Layer<Dtype> {
 public:
  explicit UnpoolLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "Unpool"; }
  virtual inline int ExactNumBottomBlobs() const { return 3; }
  virtual inline int ExactNumTopBlobs() const { return 1; }
  virtual inline bool AllowForceBackward(const int bottom_index) const { return bottom_index == 0; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom);

  /// The one-line error for an index outside [0, H * W): says what a -1 (NaN input) or a wrong reference means.
  void FailOnIndex(Dtype index) const;

  int in_plane_;   // h * w of bottom[0]
  int out_plane_;  // H * W of top[0]
  /// GPU forward: (flag, index), set by the kernel to (1, an index outside [0, H * W)) when it meets one.
  Blob<Dtype> bad_index_;
};

}  // namespace caffe

#endif  // CAFFE_UNPOOL_LAYER_HPP_
