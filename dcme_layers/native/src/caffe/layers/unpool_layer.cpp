// dcme-caffe: max-unpooling by pooling indices (see include/caffe/layers/unpool_layer.hpp).
#include <vector>

#include "caffe/layers/unpool_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void UnpoolLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  CHECK_EQ(bottom[0]->num_axes(), 4) << "Unpool expects 4-D blobs, got features " << bottom[0]->shape_string();
  CHECK_EQ(bottom[2]->num_axes(), 4) << "Unpool expects 4-D blobs, got reference " << bottom[2]->shape_string();
  CHECK(bottom[0]->shape() == bottom[1]->shape()) << "Unpool: features " << bottom[0]->shape_string()
      << " and pooling mask " << bottom[1]->shape_string() << " differ in shape";
  CHECK_EQ(bottom[2]->num(), bottom[0]->num()) << "Unpool: reference batch differs from the features batch";
  in_plane_ = bottom[0]->height() * bottom[0]->width();
  out_plane_ = bottom[2]->height() * bottom[2]->width();
  top[0]->Reshape(bottom[0]->num(), bottom[0]->channels(), bottom[2]->height(), bottom[2]->width());
  bad_index_.Reshape(vector<int>(1, 2));
}

template <typename Dtype>
void UnpoolLayer<Dtype>::FailOnIndex(Dtype index) const {
  LOG(FATAL) << "Unpool " << this->layer_param_.name() << ": pooling index " << index << " outside [0, "
             << out_plane_ << ") of the output plane; "
             << (index < 0 ? "-1 means the pooling input was NaN: has the training diverged (lower base_lr)?"
                           : "is the reference bottom the pooling layer's input?");
}

template <typename Dtype>
void UnpoolLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  const Dtype* feat = bottom[0]->cpu_data();
  const Dtype* mask = bottom[1]->cpu_data();
  Dtype* out = top[0]->mutable_cpu_data();
  caffe_set(top[0]->count(), Dtype(0), out);
  const int planes = bottom[0]->num() * bottom[0]->channels();
  for (int p = 0; p < planes; ++p) {
    for (int i = 0; i < in_plane_; ++i) {
      const int k = static_cast<int>(mask[i]);
      if (k < 0 || k >= out_plane_ || mask[i] != k) FailOnIndex(mask[i]);
      out[k] = feat[i];
    }
    feat += in_plane_;
    mask += in_plane_;
    out += out_plane_;
  }
}

template <typename Dtype>
void UnpoolLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
                                      const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[0]) {
    const Dtype* top_diff = top[0]->cpu_diff();
    const Dtype* mask = bottom[1]->cpu_data();
    Dtype* diff = bottom[0]->mutable_cpu_diff();
    const int planes = bottom[0]->num() * bottom[0]->channels();
    for (int p = 0; p < planes; ++p) {
      for (int i = 0; i < in_plane_; ++i) {
        diff[i] = top_diff[static_cast<int>(mask[i])];  // indices were checked by Forward
      }
      top_diff += out_plane_;
      mask += in_plane_;
      diff += in_plane_;
    }
  }
  for (int i = 1; i < 3; ++i) {  // pooling indices and reference size: no gradient
    if (propagate_down[i]) caffe_set(bottom[i]->count(), Dtype(0), bottom[i]->mutable_cpu_diff());
  }
}

#ifdef CPU_ONLY
STUB_GPU(UnpoolLayer);
#endif

INSTANTIATE_CLASS(UnpoolLayer);
REGISTER_LAYER_CLASS(Unpool);

}  // namespace caffe
