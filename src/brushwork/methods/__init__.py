"""Style-transfer methods. Each is an ``nn.Module`` with the same small interface:

- ``encode_style(style)``: a style image (Nx3xHxW in [0, 1]) to whatever the method keeps of a style;
- ``stylize(content, encoded_styles, style_weights=None, alpha=1.0)``: the painted content, same size;
- ``forward(content, style)``: the plain computation of the reference implementation (the benchmark's baseline).

and a module-level ``load(paths)`` that builds it from the files of a weights-registry entry.
"""
