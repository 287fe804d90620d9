// dcme-caffe: tests of UnpoolLayer (include/caffe/layers/unpool_layer.hpp), in Caffe's conventions: every test runs
// for float and double on the CPU and, in a CUDA build, on the GPU; the gradient is checked numerically; a GPU build
// also checks that the GPU gives exactly the CPU's forward and backward on the same blobs.
#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/pooling_layer.hpp"
#include "caffe/layers/unpool_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

// x (reference) -> MAX pooling 2/2 (values, indices) -> Unpool(values or features, indices, x).
template <typename Dtype>
struct UnpoolFixture {
  Blob<Dtype> x, pooled, mask, feat, up;
  vector<Blob<Dtype>*> bottom, top;

  UnpoolFixture(int n, int c, int h, int w, unsigned seed) : x(n, c, h, w) {
    // Distinct values (gaps of 1, shuffled): no ties inside any pooling window, so the argmax is unique.
    std::vector<Dtype> v(x.count());
    for (int i = 0; i < x.count(); ++i) v[i] = Dtype(i) - x.count() / 2;
    std::mt19937 rng(seed);
    std::shuffle(v.begin(), v.end(), rng);
    std::copy(v.begin(), v.end(), x.mutable_cpu_data());
    LayerParameter param;
    param.mutable_pooling_param()->set_pool(PoolingParameter_PoolMethod_MAX);
    param.mutable_pooling_param()->set_kernel_size(2);
    param.mutable_pooling_param()->set_stride(2);
    PoolingLayer<Dtype> pool(param);
    vector<Blob<Dtype>*> pb(1, &x), pt;
    pt.push_back(&pooled);
    pt.push_back(&mask);
    pool.SetUp(pb, pt);
    pool.Forward(pb, pt);
    // Independent features of the pooled shape, so that the gradient check perturbs a bottom the indices ignore.
    feat.ReshapeLike(pooled);
    FillerParameter filler_param;
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(&feat);
    bottom.push_back(&feat);
    bottom.push_back(&mask);
    bottom.push_back(&x);
    top.push_back(&up);
  }
};

template <typename TypeParam>
class UnpoolLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;
};

TYPED_TEST_CASE(UnpoolLayerTest, TestDtypesAndDevices);

TYPED_TEST(UnpoolLayerTest, TestSetUpTakesSizeFromReference) {
  typedef typename TypeParam::Dtype Dtype;
  UnpoolFixture<Dtype> f(2, 3, 7, 5, 1);  // 7x5 -> 4x3 (ceil) -> 7x5, not 8x6
  LayerParameter param;
  UnpoolLayer<Dtype> layer(param);
  layer.SetUp(f.bottom, f.top);
  EXPECT_EQ(f.feat.height(), 4);
  EXPECT_EQ(f.feat.width(), 3);
  EXPECT_EQ(f.up.shape(), f.x.shape());
}

TYPED_TEST(UnpoolLayerTest, TestForwardPlacesValuesAtArgmax) {
  typedef typename TypeParam::Dtype Dtype;
  UnpoolFixture<Dtype> f(2, 3, 7, 5, 2);
  f.bottom[0] = &f.pooled;  // unpool(pool(x)): x where x is its window's maximum, else 0
  LayerParameter param;
  UnpoolLayer<Dtype> layer(param);
  layer.SetUp(f.bottom, f.top);
  layer.Forward(f.bottom, f.top);
  const int H = 7, W = 5;
  for (int p = 0; p < 6; ++p) {
    for (int h = 0; h < H; ++h) {
      for (int w = 0; w < W; ++w) {
        Dtype m = f.x.cpu_data()[p * H * W + h * W + w];
        const int h0 = h / 2 * 2, w0 = w / 2 * 2;
        for (int i = h0; i < std::min(h0 + 2, H); ++i) {
          for (int j = w0; j < std::min(w0 + 2, W); ++j) {
            m = std::max(m, f.x.cpu_data()[p * H * W + i * W + j]);
          }
        }
        const Dtype x = f.x.cpu_data()[p * H * W + h * W + w];
        EXPECT_EQ(f.up.cpu_data()[p * H * W + h * W + w], x == m ? x : Dtype(0));
      }
    }
  }
}

TYPED_TEST(UnpoolLayerTest, TestBackwardGathers) {
  typedef typename TypeParam::Dtype Dtype;
  UnpoolFixture<Dtype> f(2, 2, 5, 7, 3);
  LayerParameter param;
  UnpoolLayer<Dtype> layer(param);
  layer.SetUp(f.bottom, f.top);
  layer.Forward(f.bottom, f.top);
  for (int i = 0; i < f.up.count(); ++i) f.up.mutable_cpu_diff()[i] = Dtype(i);
  vector<bool> down(3, true);
  layer.Backward(f.top, down, f.bottom);
  const int in_plane = f.feat.height() * f.feat.width(), out_plane = 5 * 7;
  for (int i = 0; i < f.feat.count(); ++i) {
    EXPECT_EQ(f.feat.cpu_diff()[i], Dtype(i / in_plane * out_plane + static_cast<int>(f.mask.cpu_data()[i])));
  }
  for (int i = 0; i < f.mask.count(); ++i) EXPECT_EQ(f.mask.cpu_diff()[i], Dtype(0));
  for (int i = 0; i < f.x.count(); ++i) EXPECT_EQ(f.x.cpu_diff()[i], Dtype(0));
}

TYPED_TEST(UnpoolLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  UnpoolFixture<Dtype> f(2, 2, 5, 7, 4);
  LayerParameter param;
  UnpoolLayer<Dtype> layer(param);
  GradientChecker<Dtype> checker(1e-2, 1e-3);
  checker.CheckGradientExhaustive(&layer, f.bottom, f.top, 0);
}

TYPED_TEST(UnpoolLayerTest, TestSegNetSizeChain) {
  typedef typename TypeParam::Dtype Dtype;
  const int sizes[] = {340, 170, 85, 43, 22};
  for (int k = 0; k + 1 < 5; ++k) {
    UnpoolFixture<Dtype> f(2, 1, sizes[k], sizes[k] * 2, 5 + k);
    ASSERT_EQ(f.feat.height(), sizes[k + 1]);
    LayerParameter param;
    UnpoolLayer<Dtype> layer(param);
    layer.SetUp(f.bottom, f.top);
    layer.Forward(f.bottom, f.top);
    EXPECT_EQ(f.up.height(), sizes[k]);
    EXPECT_EQ(f.up.width(), sizes[k] * 2);
    // every feature lands exactly once: the sums agree
    double in = 0, out = 0;
    for (int i = 0; i < f.feat.count(); ++i) in += f.feat.cpu_data()[i];
    for (int i = 0; i < f.up.count(); ++i) out += f.up.cpu_data()[i];
    EXPECT_NEAR(in, out, 1e-3 * f.feat.count());
  }
}

#ifndef CPU_ONLY
// The GPU forward and backward give exactly the CPU's results on the same blobs (a scatter and a gather: no
// arithmetic, so equality is exact), at odd sizes, batch > 1 and SegNet's 340 -> 170 -> 85 -> 43 -> 22 chain.
template <typename Dtype>
class UnpoolLayerGPUMatchesCPUTest : public GPUDeviceTest<Dtype> {};

TYPED_TEST_CASE(UnpoolLayerGPUMatchesCPUTest, TestDtypes);

TYPED_TEST(UnpoolLayerGPUMatchesCPUTest, TestForwardBackward) {
  typedef TypeParam Dtype;
  const int shapes[][4] = {{2, 3, 7, 5}, {3, 2, 1, 9}, {1, 4, 340, 680}, {2, 8, 170, 340}, {2, 16, 85, 170},
                           {2, 64, 43, 86}, {15, 512, 22, 43}};
  for (int s = 0; s < 7; ++s) {
    UnpoolFixture<Dtype> f(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], 10 + s);
    LayerParameter param;
    UnpoolLayer<Dtype> layer(param);
    layer.SetUp(f.bottom, f.top);
    vector<bool> down(3, true);
    // CPU: forward, then backward of a random top diff g.
    Caffe::set_mode(Caffe::CPU);
    layer.Forward(f.bottom, f.top);
    Blob<Dtype> up_cpu, g, diff_cpu;
    up_cpu.CopyFrom(f.up, false, true);
    g.ReshapeLike(f.up);
    FillerParameter filler_param;
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(&g);
    caffe_copy(g.count(), g.cpu_data(), f.up.mutable_cpu_diff());
    layer.Backward(f.top, down, f.bottom);
    diff_cpu.CopyFrom(f.feat, true, true);
    // GPU, on the same blobs, from poisoned outputs (top data and bottom diff set to 7).
    Caffe::set_mode(Caffe::GPU);
    caffe_gpu_set(f.up.count(), Dtype(7), f.up.mutable_gpu_data());
    caffe_gpu_set(f.feat.count(), Dtype(7), f.feat.mutable_gpu_diff());
    layer.Forward(f.bottom, f.top);
    layer.Backward(f.top, down, f.bottom);
    for (int i = 0; i < f.up.count(); ++i) ASSERT_EQ(f.up.cpu_data()[i], up_cpu.cpu_data()[i]) << "shape " << s;
    for (int i = 0; i < f.feat.count(); ++i) {
      ASSERT_EQ(f.feat.cpu_diff()[i], diff_cpu.cpu_diff()[i]) << "shape " << s;
    }
  }
}
#endif

}  // namespace caffe
