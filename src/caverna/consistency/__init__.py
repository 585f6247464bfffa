"""Brand consistency measurements on the pixels of finished images, with no model weights.

Every check is a measurement a person can repeat (colour distances, luminance centroids, a
perceptual hash), so a score says what was measured and never more. The modules import only the
standard library, Pillow and the brand layer; this file imports nothing so that the prompt engine
can use the variant assignment without loading the image code.
"""
