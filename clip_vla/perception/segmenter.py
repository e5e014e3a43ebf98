"""CLIPSeg, run the fast way: one truncated vision pass per frame, cached prompts, batched decoding.

The transformers forward re-encodes the image once per prompt and the text on every call.
Here:

- the backbone runs once on a 1x3xSxS input and stops at the deepest layer the decoder reads
  (``extract_layers`` [3, 6, 9] of 12: two of twelve layers are skipped). The rest of the tower
  (pooled CLIP image embedding) only runs when someone asks for ``ImageFeatures.image_embedding``
  (skill scoring on a shared backbone), and its last layer only for the CLS token it reads;
- the tower is run from the model's own modules by ``VisionTower``, a leaner forward than
  transformers' (cached position embeddings, batched-matmul attention for bf16 on CPU, fused
  activation, in-place residuals), numerically the same computation;
- the decoder's per-image work (the ``reduce`` projections of the extracted activations, and
  anything before the FiLM conditioning) runs once; only what depends on the prompt runs K
  times, in one batch, on text embeddings that are computed once and cached;
- masks are upsampled and compared on the model's device; ``target_maps`` returns only the
  target's probability map and winner mask, which is all geometry needs.

On CUDA, ``accelerate("cuda_graphs")`` captures the fixed-shape parts (vision pass, decoder
per prompt count) as CUDA graphs; ``accelerate("compile")`` uses ``torch.compile`` instead.
Both are off by default (see docs/benchmarks.md).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from clip_vla.perception.loading import LoadedModels
from clip_vla.perception.text_cache import TextEmbeddingCache

ACCELERATIONS = ("none", "compile", "cuda_graphs")


class ImageFeatures:
    """What one vision pass gives: decoder activations and (lazily) the projected CLIP image embedding.

    ``image_embedding`` (1xP, CLIPSeg's CLIP space) costs the layers the decoder does not need
    (plus the post-layernorm and projection); it runs on first access only. Read it before the
    next frame is encoded when CUDA graphs are on (their buffers are reused).
    """

    def __init__(self, activations: List[Any], image_embedding: Any = None,
                 rest: Optional[Callable[[], Any]] = None) -> None:
        self.activations = activations
        self._embedding = image_embedding
        self._rest = rest

    @property
    def image_embedding(self):
        if self._embedding is None and self._rest is not None:
            self._embedding = self._rest()
            self._rest = None
        return self._embedding

    @image_embedding.setter
    def image_embedding(self, value) -> None:
        self._embedding, self._rest = value, None


def _quick_gelu(x):
    """x * sigmoid(1.702 x) with one temporary (transformers' QuickGELU makes two)."""
    return x.mul(1.702).sigmoid_().mul_(x)


class VisionTower:
    """A CLIP-family vision transformer (CLIP, CLIPSeg) run from its own modules, without waste.

    Same operations as the transformers forward (pre-LN encoder layers, quick-GELU MLP), with:
    position embeddings interpolated once per input size, attention as two batched matmuls for
    bf16 on CPU (``scaled_dot_product_attention`` otherwise), activation and residual adds in
    place, the ability to stop after any layer, and a CLS-only last layer for the pooled output.
    Linear and layer-norm layers are called as modules, so adapters (e.g. LoRA wrappers) on them
    keep working.
    """

    def __init__(self, vision_model: Any, projection: Any = None, sdpa: Optional[bool] = None) -> None:
        import torch

        self.vm = vision_model
        self.projection = projection
        self.layers = list(vision_model.encoder.layers)
        attn = self.layers[0].self_attn
        self.heads = int(attn.num_heads)
        self.head_dim = int(attn.head_dim)
        self.scale = float(attn.scale)
        act = getattr(vision_model.config, "hidden_act", "quick_gelu")
        self._act = _quick_gelu if act == "quick_gelu" else self.layers[0].mlp.activation_fn
        weight = vision_model.embeddings.patch_embedding.weight
        # On CPU in bf16, two batched matmuls and a softmax beat the fused kernel at these sizes
        # (N ~ 485, head_dim 64): -14% for the whole tower; in fp32 the fused kernel is 3% faster.
        # The softmax of a bf16 tensor accumulates in fp32, so it equals transformers' fp32 softmax
        # rounded to bf16 (to 1 ulp). On CUDA the fused (flash) kernel always wins.
        if sdpa is None:
            sdpa = weight.device.type == "cuda" or weight.dtype == torch.float32
        self.sdpa = bool(sdpa)
        self._pos: Dict[Tuple[int, int, str, str], Any] = {}

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def clear_cache(self) -> None:
        """Forget cached position embeddings (call after changing the weights)."""
        self._pos.clear()

    def positions(self, pixel_values):
        """1xNxD position embeddings for this input size (interpolated once per size, then cached)."""
        import torch

        emb = self.vm.embeddings
        weight = emb.patch_embedding.weight
        height, width = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
        key = (height, width, str(weight.device), str(weight.dtype))
        pos = self._pos.get(key)
        if pos is None:
            with torch.inference_mode():
                pos = position_table(emb, height, width)
            self._pos[key] = pos
        return pos

    def embed(self, pixel_values, positions=None):
        """1x3xHxW normalised pixels -> 1xNxD tokens after the pre-layernorm."""
        import torch

        emb = self.vm.embeddings
        if positions is None:
            positions = self.positions(pixel_values)
        x = pixel_values.to(emb.patch_embedding.weight.dtype)
        patches = emb.patch_embedding(x).flatten(2).transpose(1, 2)  # B x (h*w) x D
        cls = emb.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        return self.vm.pre_layrnorm(tokens + positions)

    def attention(self, attn, x):
        return attention(attn, x, self.heads, self.head_dim, self.scale, self.sdpa)

    def layer(self, index: int, h):
        """One pre-LN encoder layer: h + attn(ln1(h)); h + mlp(ln2(h))."""
        layer = self.layers[index]
        a = self.attention(layer.self_attn, layer.layer_norm1(h))
        h = a.add_(h)
        m = layer.mlp.fc2(self._act(layer.mlp.fc1(layer.layer_norm2(h))))
        return m.add_(h)

    def run(self, h, start: int, stop: int, keep: Sequence[int] = ()) -> Tuple[Any, Dict[int, Any]]:
        """Layers ``start..stop-1``; returns the last state and the outputs of the layers in ``keep``."""
        kept: Dict[int, Any] = {}
        for i in range(start, stop):
            h = self.layer(i, h)
            if i in keep:
                kept[i] = h
        return h, kept

    def last_layer_cls(self, h):
        """The last layer for the CLS token only (all that ``pool`` reads): keys and values for every
        token, query, attention and MLP for one. Returns 1x1xD."""
        import torch

        layer = self.layers[-1]
        attn = layer.self_attn
        x = layer.layer_norm1(h)
        b, n, d = x.shape
        q = attn.q_proj(x[:, :1]).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        w = torch.softmax(torch.matmul(q * self.scale, k.transpose(-1, -2)), dim=-1)
        o = attn.out_proj(torch.matmul(w, v).transpose(1, 2).reshape(b, 1, d))
        cls = o.add_(h[:, :1])
        m = layer.mlp.fc2(self._act(layer.mlp.fc1(layer.layer_norm2(cls))))
        return m.add_(cls)

    def pool(self, h):
        """CLS token -> post-layernorm -> projection (1xP); the tower must have run to the end."""
        pooled = self.vm.post_layernorm(h[:, 0, :])
        return self.projection(pooled) if self.projection is not None else pooled

    def image_embedding(self, pixel_values):
        """The projected CLIP image embedding (all layers): ``get_image_features`` equivalent."""
        import torch

        with torch.inference_mode():
            h, _ = self.run(self.embed(pixel_values), 0, self.num_layers - 1)
            return self.pool(self.last_layer_cls(h))


def position_table(embeddings: Any, height: int, width: int):
    """1xNxD position embeddings of a CLIP vision embeddings module for a HxW input.

    transformers' bicubic interpolation of the trained table (the table itself at its own size);
    call it under ``torch.no_grad`` or ``torch.inference_mode``.
    """
    import torch

    weight = embeddings.position_embedding.weight
    n = (height // embeddings.patch_size) * (width // embeddings.patch_size) + 1
    dummy = torch.empty(1, n, weight.shape[1], device=weight.device, dtype=weight.dtype)
    return embeddings.interpolate_pos_encoding(dummy, height, width).to(weight.dtype)


def attention(attn: Any, x, heads: int, head_dim: int, scale: float, sdpa: bool):
    """Multi-head self-attention of ``attn`` (q/k/v/out projections) on BxNxD ``x``, no mask."""
    import torch
    import torch.nn.functional as F

    b, n, d = x.shape
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    if sdpa:
        q = q.view(b, n, heads, head_dim).transpose(1, 2)
        k = k.view(b, n, heads, head_dim).transpose(1, 2)
        v = v.view(b, n, heads, head_dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, scale=scale)
        o = o.transpose(1, 2).reshape(b, n, d)
    else:
        q = q.mul_(scale).view(b, n, heads, head_dim).transpose(1, 2).reshape(b * heads, n, head_dim)
        kt = k.view(b, n, heads, head_dim).permute(0, 2, 3, 1).reshape(b * heads, head_dim, n)
        v = v.view(b, n, heads, head_dim).transpose(1, 2).reshape(b * heads, n, head_dim)
        w = torch.softmax(torch.bmm(q, kt), dim=-1)
        o = torch.bmm(w, v).view(b, heads, n, head_dim).transpose(1, 2).reshape(b, n, d)
    return attn.out_proj(o)


class Segmenter:
    def __init__(self, models: LoadedModels) -> None:
        self.models = models
        self.model = models.clipseg
        self.tokenizer = models.clipseg_tokenizer
        self.text_cache = TextEmbeddingCache(self._encode_texts)
        self.tower = VisionTower(self.model.clip.vision_model, self.model.clip.visual_projection)
        self.extract = [int(i) for i in self.model.extract_layers]
        self.stop = max(self.extract) + 1  # layers the decoder needs; the rest only for the pooled embedding
        dec = self.model.decoder
        dattn = dec.layers[0].self_attn
        self._dec_heads, self._dec_head_dim, self._dec_scale = int(dattn.num_heads), int(dattn.head_dim), float(
            dattn.scale)
        self._dec_relu = type(dec.layers[0].mlp.activation_fn).__name__ == "ReLU"  # transformers hard-codes it
        self.acceleration = "none"
        self._graphs: Dict[Any, Any] = {}
        self._compiled: Dict[str, Any] = {}

    # ------------------------------------------------------------------ text
    def _encode_texts(self, phrases: List[str]):
        import torch

        tokens = self.tokenizer(list(phrases), padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.models.device) for k, v in tokens.items()}
        with torch.inference_mode():
            out = self.model.clip.get_text_features(input_ids=tokens["input_ids"],
                                                    attention_mask=tokens["attention_mask"])
        return out.pooler_output

    def text_embeddings(self, phrases: Sequence[str]):
        """KxP prompt embeddings (cached)."""
        return self.text_cache.get(list(phrases))

    # ------------------------------------------------------------------ image
    def _encode(self, pixel_values, positions) -> Tuple[List[Any], Any]:
        tower = self.tower
        h, kept = tower.run(tower.embed(pixel_values, positions), 0, self.stop, keep=self.extract)
        return [kept[i] for i in self.extract], h

    def _rest(self, h) -> Callable[[], Any]:
        """The pooled embedding from the last decoder-layer state: remaining layers, LN, projection."""
        import torch

        tower, stop = self.tower, self.stop

        def finish():
            with torch.inference_mode():
                if stop >= tower.num_layers:
                    return tower.pool(h)
                last, _ = tower.run(h, stop, tower.num_layers - 1)
                return tower.pool(tower.last_layer_cls(last))

        return finish

    def encode_image(self, pixel_values) -> ImageFeatures:
        """One vision pass up to the deepest extracted layer; the pooled embedding is lazy."""
        import torch

        positions = self.tower.positions(pixel_values)
        with torch.inference_mode():
            if self.acceleration == "cuda_graphs":
                activations, h = self._graph("encode", self._encode, pixel_values, positions)
            elif self.acceleration == "compile":
                activations, h = self._compile("encode", self._encode)(pixel_values, positions)
            else:
                activations, h = self._encode(pixel_values, positions)
        return ImageFeatures(activations=list(activations), rest=self._rest(h))

    # ------------------------------------------------------------------ decoder
    def _decoder_layer(self, layer, h):
        """CLIPSeg decoder layer (post-LN): ln1(h + attn(h)); ln2(h + mlp(h))."""
        # The fused kernel wins here on every device: the decoder's heads are narrow (64 / 4 = 16).
        a = attention(layer.self_attn, h, self._dec_heads, self._dec_head_dim, self._dec_scale, True)
        h = layer.layer_norm1(a.add_(h))
        m = layer.mlp.fc1(h)
        m = m.relu_() if self._dec_relu else layer.mlp.activation_fn(m)  # in place: K x N x 2048
        return layer.layer_norm2(layer.mlp.fc2(m).add_(h))

    def _decode(self, activations: Sequence[Any], text_embeddings):
        dec = self.model.decoder
        k = text_embeddings.shape[0]
        cond = text_embeddings.to(activations[0].dtype)
        out = None
        for i, (activation, layer, reduce) in enumerate(zip(list(activations)[::-1], dec.layers, dec.reduces)):
            reduced = reduce(activation)  # once per image (batch 1), broadcast over the prompts below
            out = reduced if out is None else out + reduced
            if i == dec.conditional_layer:
                out = dec.film_mul(cond).unsqueeze(1) * out + dec.film_add(cond).unsqueeze(1)
            out = self._decoder_layer(layer, out)
        if out.shape[0] != k:  # conditioning after the last layer (not a CLIPSeg configuration)
            out = out.expand(k, -1, -1)
        out = out[:, 1:, :].transpose(1, 2)
        side = int(math.sqrt(out.shape[2]))
        out = out.reshape(k, out.shape[1], side, side)
        logits = dec.transposed_convolution(out)
        return logits.view(k, *logits.shape[-2:])

    def decode(self, features: ImageFeatures, text_embeddings):
        """KxhxW logits at the model's resolution, one map per prompt."""
        import torch

        with torch.inference_mode():
            if self.acceleration == "cuda_graphs":
                return self._graph(("decode", int(text_embeddings.shape[0])), self._decode,
                                   list(features.activations), text_embeddings)
            if self.acceleration == "compile":
                return self._compile("decode", self._decode)(list(features.activations), text_embeddings)
            return self._decode(features.activations, text_embeddings)

    # ------------------------------------------------------------------ masks
    @staticmethod
    def probabilities(logits, out_size: Tuple[int, int]):
        """Sigmoid probabilities upsampled to (H, W), as float32 numpy KxHxW."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            up = F.interpolate(logits.unsqueeze(1).float(), size=out_size, mode="bilinear", align_corners=False)
            return torch.sigmoid_(up[:, 0]).cpu().numpy()

    @staticmethod
    def target_maps(logits, out_size: Tuple[int, int], targets: Sequence[int], threshold: float,
                    competitors: Optional[Sequence[int]] = None) -> Dict[int, Tuple[Any, Any]]:
        """Per target prompt: (HxW float32 probability map, HxW bool winner mask), as numpy.

        The ``clip_vla.perception.localize.target_mask`` rule, computed on the model's device and copied back
        for the targets only (not all K maps): a pixel is the target when its probability clears
        ``threshold`` and the target beats every competitor there (all prompts by default). The
        competition compares upsampled logits: the same order as probabilities (sigmoid is
        monotonic), but it still decides where float32 sigmoids saturate to equal values.
        """
        import torch
        import torch.nn.functional as F

        targets = [int(t) for t in targets]
        if not targets:
            return {}
        k = int(logits.shape[0])
        competitors = list(range(k)) if competitors is None else [int(c) for c in competitors]
        with torch.inference_mode():
            up = F.interpolate(logits.unsqueeze(1).float(), size=out_size, mode="bilinear", align_corners=False)[:, 0]
            probs, masks = [], []
            shared = None  # competitors that are no target: their pixel-wise maximum is the same for all
            if competitors and not set(competitors) & set(targets):
                shared = up[competitors].amax(dim=0)
            for t in targets:
                lt = up[t]
                prob = torch.sigmoid(lt)
                mask = prob >= threshold
                others = [c for c in competitors if c != t]
                if shared is not None:
                    mask &= lt > shared
                elif others:
                    rival = up[others[0]] if len(others) == 1 else torch.maximum(up[others[0]], up[others[1]])
                    for c in others[2:]:
                        torch.maximum(rival, up[c], out=rival)
                    mask &= lt > rival
                probs.append(prob)
                masks.append(mask)
            if up.device.type == "cpu":  # no copy to make: views as numpy
                return {t: (probs[i].numpy(), masks[i].numpy()) for i, t in enumerate(targets)}
            probs_np = torch.stack(probs).cpu().numpy()  # one device-to-host copy per kind
            masks_np = torch.stack(masks).cpu().numpy()
        return {t: (probs_np[i], masks_np[i]) for i, t in enumerate(targets)}

    # ------------------------------------------------------------------ acceleration (CUDA)
    def accelerate(self, mode: str = "none") -> str:
        """``none`` | ``compile`` (torch.compile of the fixed-shape parts) | ``cuda_graphs`` (CUDA only).

        CUDA graphs fall back to ``none`` on CPU. Returns the mode in use. Captured graphs and
        compiled functions are specialised to the input size and the prompt count; the first
        call of each shape is slow, which ``warm_up`` absorbs at start-up.
        """
        mode = (mode or "none").strip().lower()
        if mode not in ACCELERATIONS:
            raise ValueError(f"acceleration must be one of {', '.join(ACCELERATIONS)}; got '{mode}'")
        if mode == "cuda_graphs" and self.models.device.type != "cuda":
            mode = "none"
        self._graphs.clear()
        self._compiled.clear()
        if self.models.device.type == "cuda":
            import torch

            # cuDNN picks the fastest kernels for the fixed shapes; channels-last suits its convolutions.
            torch.backends.cudnn.benchmark = True
            self.model.decoder.transposed_convolution.to(memory_format=torch.channels_last)
        self.acceleration = mode
        return mode

    def _compile(self, name: str, fn):
        compiled = self._compiled.get(name)
        if compiled is None:
            import torch

            cuda = self.models.device.type == "cuda"
            compiled = torch.compile(fn, mode="reduce-overhead" if cuda else "default", dynamic=False)
            self._compiled[name] = compiled
        return compiled

    def _graph(self, key, fn, *inputs):
        """Replay a CUDA graph of ``fn`` captured for these input shapes (captured on first use)."""
        runner = self._graphs.get(key)
        if runner is None or not runner.matches(inputs):
            runner = _CudaGraph(fn, inputs)
            self._graphs[key] = runner
        return runner(inputs)


class _CudaGraph:
    """``fn(*inputs)`` captured once as a CUDA graph with static input/output buffers.

    Inputs are tensors or lists of tensors; each call copies them into the static buffers and
    replays. Outputs are the static buffers themselves: valid until the next replay.
    """

    def __init__(self, fn, inputs) -> None:
        import torch

        self.fn = fn
        self.static = [self._clone(x) for x in inputs]
        self.shapes = self._shapes(inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm-up off the default stream, as torch.cuda.graphs requires
                fn(*self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.output = fn(*self.static)

    @staticmethod
    def _clone(x):
        if isinstance(x, (list, tuple)):
            return [t.clone() for t in x]
        return x.clone()

    @staticmethod
    def _shapes(inputs):
        out = []
        for x in inputs:
            items = x if isinstance(x, (list, tuple)) else [x]
            out.append(tuple((tuple(t.shape), t.dtype) for t in items))
        return out

    def matches(self, inputs) -> bool:
        return self._shapes(inputs) == self.shapes

    def __call__(self, inputs):
        for static, x in zip(self.static, inputs):
            if isinstance(static, list):
                for s, t in zip(static, x):
                    if s.data_ptr() != t.data_ptr():
                        s.copy_(t, non_blocking=True)
            elif static.data_ptr() != x.data_ptr():
                static.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.output


def warm_up(pipeline: Any, width: int, height: int, command: Optional[str] = None,
            all_objects: bool = True) -> Optional[Any]:
    """Run dummy inferences so the first real command is not slow.

    Fills the text caches (the command's prompts, the distractors and, with ``all_objects``, every
    vocabulary object's CLIPSeg prompt and skill matrix), lets cuDNN pick its kernels, captures
    CUDA graphs / compiles when acceleration is on (each command then runs twice: the second
    run replays what the first captured), for both prompt counts a command can have (object,
    and object + destination). The node and the benchmark both warm up here. Returns the
    result of ``command`` (or of a default command) on the dummy frame: usually a NoAction,
    the grey frame holds no object; None for an oracle pipeline.
    """
    import numpy as np

    from clip_vla.core.types import Frame, Intrinsics

    if getattr(pipeline, "models", None) is None:
        return None
    vocab = pipeline.vocabulary
    objects = list(vocab.objects) or ["object", "box"]
    first = objects[0]
    second = objects[1] if len(objects) > 1 else "bowl"
    movers = [s for s in vocab.skills if s.name != vocab.stop_skill and s.verbs]
    single = next((s for s in movers if not s.needs_destination), None)
    double = next((s for s in movers if s.needs_destination), None)
    commands = [command] if command else []
    if single is not None and command is None:
        commands.append(f"{single.verbs[0]} the {first}")
    if double is not None:
        commands.append(f"{double.verbs[0]} the {first} in the {second}")
    if not commands:
        commands.append(f"pick up the {first}")
    if all_objects and pipeline.segmenter is not None:
        template = pipeline.config.perception.prompt_template
        pipeline.segmenter.text_embeddings([template.replace("{object}", o) for o in vocab.objects]
                                           + list(vocab.distractors))
        if pipeline.scorer is not None:
            for obj in vocab.objects:
                pipeline.scorer.skill_matrix(obj)
    rgb = np.full((int(height), int(width), 3), 127, np.uint8)
    depth = np.full((int(height), int(width)), 800, np.uint16)
    intrinsics = pipeline.default_intrinsics or Intrinsics(
        fx=float(width), fy=float(width), cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)
    accelerated = pipeline.segmenter is not None and pipeline.segmenter.acceleration != "none"
    results = []
    for text in commands:
        for _ in range(2 if accelerated else 1):  # the second run replays what the first captured or compiled
            result = pipeline.run(Frame(rgb=rgb, depth=depth, intrinsics=intrinsics), text)
        results.append(result)
    return results[0]
