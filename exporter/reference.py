"""PyTorch reference of the whole method on diffusers modules, independent of the ONNX graphs.

It follows the authors' notebook `null_text_w_ptp.ipynb` (google/prompt-to-prompt) and docs/design.md §1, with
its known defects fixed and each fix named:
- DDIM inversion evaluates the UNet at the noise level of the latent it is given (pairing="consistent");
  the notebook gives it the next level's timestep (issues #64/#79). pairing="notebook" reproduces that.
- local blend sizes its mask from the latent being blended, not from a global `x_t` (PR #88).
- v-prediction models (SD 2.x) are handled in the DDIM steps.

Methods with their own samplers keep their reference in their own module (EDICT: exporter/edict.py).

Used (a) to write parity fixtures for the TypeScript engine and (b) as the speed baseline. It keeps the
notebook's iteration schedule, redundant UNet passes included, and counts UNet evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention

from .configs import Components
from .ddim import ddim_step

MAX_TOKENS = 77


@dataclass
class Settings:
    steps: int = 50
    guidance: float = 7.5
    inner_steps: int = 10
    lr: float = 1e-2
    early_stop: float = 1e-5
    early_stop_slope: float = 2e-5
    pairing: str = "consistent"  # or "notebook"
    # "notebook": Adam step after every gradient, then a batch-2 pass with the final embedding.
    # "lean": loss checked before the Adam step; the loop ends on the embedding it evaluated last, and the
    # latent its gradient pass computed is the next one (no extra pass). See src/core/inversion.ts.
    inner_loop: str = "notebook"
    null_init: str = "empty"  # or "prompt": start step 0 from the prompt embedding (NPI-style)


@dataclass
class NullTextResult:
    null_embeddings: list[torch.Tensor]  # per step, [1, 77, D], step 0 = highest timestep
    losses: list[list[float]]  # per step, the loss of each inner iteration (before its Adam step)
    latents: list[torch.Tensor] = field(default_factory=list)  # per step, the latent the step starts from
    unet_forward: int = 0
    unet_backward: int = 0
    final_latent: torch.Tensor | None = None  # the latent the last step ends on (= the reconstruction)


# ---- tokens ----------------------------------------------------------------------------------------

class Tokens:
    """Prompt -> ids as the engine does it, plus the notebook's word/token bookkeeping for P2P."""

    def __init__(self, tokenizer):
        from tokenizers import Tokenizer

        self.padded = tokenizer
        self.plain = Tokenizer.from_str(tokenizer.to_str())
        self.plain.no_padding()
        self.plain.no_truncation()

    def ids(self, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([e.ids for e in self.padded.encode_batch(prompts)], dtype=torch.int64)

    def sequence(self, prompt: str) -> list[int]:
        """Ids with start and end tokens, no padding."""
        return self.plain.encode(prompt).ids[:MAX_TOKENS]

    def word_token_indices(self, prompt: str, word_index: int) -> list[int]:
        """Positions (start token = 0) of the tokens of the word at `word_index` of prompt.split(' ')."""
        words = prompt.split(" ")
        pos = 1
        for i, w in enumerate(words):
            n = len(self.plain.encode(w, add_special_tokens=False).ids)
            if i == word_index:
                return list(range(pos, pos + n))
            pos += n
        raise IndexError(word_index)

    def word_indices(self, prompt: str, word: str) -> list[int]:
        out: list[int] = []
        for i, w in enumerate(prompt.split(" ")):
            if w == word:
                out += self.word_token_indices(prompt, i)
        return out


def replacement_mapper(tokens: Tokens, source: str, edited: str) -> torch.Tensor:
    """[77, 77] source-token -> edited-token map for a word swap (notebook: get_replacement_mapper_)."""
    wx, wy = source.split(" "), edited.split(" ")
    if len(wx) != len(wy):
        raise ValueError("replace needs prompts of the same number of words; use refine")
    changed = [i for i in range(len(wy)) if wy[i] != wx[i]]
    src = [tokens.word_token_indices(source, i) for i in changed]
    dst = [tokens.word_token_indices(edited, i) for i in changed]
    mapper = np.zeros((MAX_TOKENS, MAX_TOKENS))
    i = j = cur = 0
    while i < MAX_TOKENS and j < MAX_TOKENS:
        if cur < len(src) and src[cur][0] == i:
            s, d = src[cur], dst[cur]
            if len(s) == len(d):
                mapper[s, d] = 1
            else:
                for t in d:
                    mapper[s, t] = 1 / len(d)
            cur += 1
            i += len(s)
            j += len(d)
        elif cur < len(src):
            mapper[i, j] = 1
            i += 1
            j += 1
        else:
            mapper[j, j] = 1
            i += 1
            j += 1
    return torch.from_numpy(mapper).float()


def refinement_mapper(tokens: Tokens, source: str, edited: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper [77] edited position -> source position, alphas [77]) by global alignment (notebook)."""
    x, y = tokens.sequence(source), tokens.sequence(edited)
    n, m = len(x), len(y)
    score = np.zeros((n + 1, m + 1))
    trace = np.zeros((n + 1, m + 1), dtype=np.int64)
    trace[0, 1:], trace[1:, 0], trace[0, 0] = 1, 2, 4
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left, up = score[i, j - 1], score[i - 1, j]
            diag = score[i - 1, j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i, j] = max(left, up, diag)
            trace[i, j] = 1 if score[i, j] == left else 2 if score[i, j] == up else 3
    i, j = n, m
    pairs = []
    while i > 0 or j > 0:
        if trace[i, j] == 3:
            i, j = i - 1, j - 1
            pairs.append((j, i))
        elif trace[i, j] == 1:
            j -= 1
            pairs.append((j, -1))
        elif trace[i, j] == 2:
            i -= 1
        else:
            break
    pairs.reverse()
    base = torch.tensor(pairs, dtype=torch.int64)
    alphas = torch.ones(MAX_TOKENS)
    alphas[: len(base)] = base[:, 1].ne(-1).float()
    mapper = torch.zeros(MAX_TOKENS, dtype=torch.int64)
    mapper[: len(base)] = base[:, 1]
    mapper[len(base):] = m + torch.arange(MAX_TOKENS - m)
    return mapper, alphas


# ---- Prompt-to-Prompt control, notebook style ----------------------------------------------------------

def edit_nulls(nulls: list[torch.Tensor], uncond: torch.Tensor, k: int, edit_null: str) -> list[torch.Tensor]:
    """Per step, the null embeddings of an edit's K branches (src/core/settings.ts EditNull): "inverted", the
    inversion's in every branch (the null-text paper); "empty", the source branch's from the inversion and
    the empty prompt's in the edited ones (Ju et al., PnP Inversion, ICLR 2024)."""
    if edit_null == "inverted":
        return nulls
    if edit_null != "empty":
        raise ValueError(edit_null)
    return [torch.cat([n, uncond.expand(k - 1, *uncond.shape[1:])]) for n in nulls]


def default_blend(source: str, edited: list[str]) -> list[list[int]]:
    """The engine's default local blend for a word swap (src/core/edit.ts resolveEdit): per prompt, the
    positions of the words that differ; the source's are every edit's changed positions."""
    words = source.split(" ")
    changed = [[i for i, w in enumerate(e.split(" ")) if w != words[i]] for e in edited]
    return [sorted({i for c in changed for i in c}), *changed]


@dataclass
class EditSpec:
    mode: str  # replace | refine | reweight
    cross_replace_steps: float = 0.8
    self_replace_steps: float = 0.4
    reweight: dict[str, float] = field(default_factory=dict)  # word -> factor, on the edited prompt(s)
    blend_words: list[list[str]] | None = None  # per prompt, words whose maps make the local-blend mask
    blend_word_indices: list[list[int]] | None = None  # per prompt, word positions instead (default_blend)
    blend_threshold: float = 0.3
    blend_start: float = 0.2
    user_mask: torch.Tensor | None = None  # [h, w] latent-size mask in [0, 1]
    user_mask_mode: str = "union"  # or "replace"


class P2PController:
    """AttentionStore + AttentionReplace/Refine/Reweight + LocalBlend of the notebook, one class."""

    def __init__(self, tokens: Tokens, prompts: list[str], spec: EditSpec, num_steps: int, map_tokens: int,
                 self_max_tokens: int, device: str | torch.device = "cpu"):
        self.k = len(prompts)
        self.spec = spec
        self.map_tokens = map_tokens
        self.self_max_tokens = self_max_tokens
        self.cur_step = 0
        self.step_maps: list[torch.Tensor] = []
        self.store_sum: torch.Tensor | None = None  # running sum over steps of the per-step layer mean
        self.stored_steps = 0
        src = prompts[0]
        edits = prompts[1:]
        if spec.mode == "replace":
            self.mapper = torch.stack([replacement_mapper(tokens, src, e) for e in edits])
            self.alphas = None
        elif spec.mode in ("refine", "reweight"):
            pairs = [refinement_mapper(tokens, src, e) for e in edits]
            self.mapper = torch.stack([p[0] for p in pairs])
            self.alphas = torch.stack([p[1] for p in pairs])  # [K-1, 77]
        else:
            raise ValueError(spec.mode)
        self.equalizer = None
        if spec.reweight:
            eq = torch.ones(len(edits), MAX_TOKENS)
            for word, factor in spec.reweight.items():
                for b, e in enumerate(edits):
                    eq[b, tokens.word_indices(e, word)] = factor
            self.equalizer = eq
        end = int(spec.cross_replace_steps * (num_steps + 1))
        self.cross_alpha = torch.zeros(num_steps + 1, len(edits), 1, 1, MAX_TOKENS)
        self.cross_alpha[:end] = 1
        self.self_steps = (0, int(num_steps * spec.self_replace_steps))
        self.blend = None
        blend_at = spec.blend_word_indices  # per prompt, the positions of the words that make the mask
        if spec.blend_words is not None:
            blend_at = [[j for j, w in enumerate(p.split(" ")) if w in words] for p, words in zip(prompts, spec.blend_words)]
        if blend_at is not None:
            alpha_layers = torch.zeros(self.k, MAX_TOKENS)
            for i, (p, indices) in enumerate(zip(prompts, blend_at)):
                for j in indices:
                    alpha_layers[i, tokens.word_token_indices(p, j)] = 1
            self.blend = alpha_layers
        self.blend_start = int(spec.blend_start * num_steps)
        self.mask_history: list[torch.Tensor] = []
        for name in ("mapper", "alphas", "equalizer", "cross_alpha", "blend"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))

    # cross-attention of the edit branches, before time blending
    def _replace_cross(self, base: torch.Tensor, replace: torch.Tensor) -> torch.Tensor:
        if self.alphas is None:
            out = torch.einsum("hpw,bwn->bhpn", base, self.mapper)
        else:
            mapped = base[:, :, self.mapper].permute(2, 0, 1, 3)
            a = self.alphas[:, None, None, :]
            out = mapped * a + replace * (1 - a)
        if self.equalizer is not None:
            out = out * self.equalizer[:, None, None, :]
        return out

    def __call__(self, attn: torch.Tensor, is_cross: bool, name: str) -> torch.Tensor:
        """attn: [K, heads, N, M] probabilities of the conditional half."""
        n = attn.shape[2]
        if is_cross and n == self.map_tokens and not name.startswith("mid_block"):
            self.step_maps.append(attn.mean(dim=1))
        base, replace = attn[0], attn[1:]
        if is_cross:
            alpha_words = self.cross_alpha[self.cur_step]
            new = self._replace_cross(base, replace) * alpha_words + (1 - alpha_words) * replace
            return torch.cat([attn[:1], new])
        if self.self_steps[0] <= self.cur_step < self.self_steps[1] and n < self.self_max_tokens:
            return torch.cat([attn[:1], base.unsqueeze(0).expand_as(replace)])
        return attn

    def end_unet_call(self) -> None:
        if self.step_maps:
            mean = torch.stack(self.step_maps).mean(0)  # [K, N, 77]
            self.store_sum = mean if self.store_sum is None else self.store_sum + mean
        self.step_maps = []
        self.cur_step += 1

    def step_callback(self, x_t: torch.Tensor, step_index: int) -> torch.Tensor:
        """Local blend (notebook LocalBlend, with its x_t defect fixed): keep the source outside the mask."""
        mask = None
        if self.blend is not None and step_index + 1 > self.blend_start:
            r = int(round(self.map_tokens ** 0.5))
            maps = self.store_sum.reshape(self.k, r, r, MAX_TOKENS)
            maps = (maps * self.blend[:, None, None, :]).sum(-1)[:, None]  # [K, 1, r, r]
            maps = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
            mask = F.interpolate(maps, size=x_t.shape[2:])
            mask = mask / mask.amax(dim=(2, 3), keepdim=True)
            mask = mask.gt(self.spec.blend_threshold)
            mask = (mask[:1] | mask).float()
        if self.spec.user_mask is not None and step_index + 1 > self.blend_start:
            um = self.spec.user_mask.to(x_t)[None, None].expand(self.k, 1, *x_t.shape[2:])
            mask = um if (mask is None or self.spec.user_mask_mode == "replace") else torch.maximum(mask, um)
        if mask is None:
            return x_t
        self.mask_history.append(mask[1:])
        return x_t[:1] + mask * (x_t - x_t[:1])

    def mask_share(self) -> float:
        """Share of the latent inside the last blend mask (1.0 without one: nothing of the source is kept)."""
        return float(self.mask_history[-1].mean()) if self.mask_history else 1.0

    def average_maps(self) -> torch.Tensor:
        r = int(round(self.map_tokens ** 0.5))
        return (self.store_sum / max(self.cur_step, 1)).reshape(self.k, r, r, MAX_TOKENS)


class _ControlledProcessor:
    """diffusers AttnProcessor maths with the controller called on the conditional half's probabilities."""

    def __init__(self, ref: "Reference", name: str):
        self.ref = ref
        self.name = name

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        is_cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if is_cross else hidden_states
        if is_cross and attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(ctx))
        v = attn.head_to_batch_dim(attn.to_v(ctx))
        probs = attn.get_attention_scores(q, k, None)
        ctl = self.ref.controller
        if self.ref.record_tokens is not None:
            self.ref.record_tokens[self.name] = (is_cross, probs.shape[1])
        if ctl is not None:
            h = attn.heads
            b = probs.shape[0] // h
            p = probs.reshape(b, h, *probs.shape[1:])
            cond = ctl(p[b // 2:], is_cross, self.name)
            probs = torch.cat([p[: b // 2], cond]).reshape(b * h, *probs.shape[1:])
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


# ---- the method -----------------------------------------------------------------------------------

class Reference:
    def __init__(self, c: Components, settings: Settings | None = None, device: str = "cpu"):
        self.c = c
        self.s = settings or Settings()
        self.device = torch.device(device)
        self.unet, self.vae, self.text_encoder = c.unet.eval(), c.vae.eval(), c.text_encoder.eval()
        for m in (self.unet, self.vae, self.text_encoder):
            m.requires_grad_(False).to(self.device)
        self.tokens = Tokens(c.tokenizer)
        self.scheduler = DDIMScheduler.from_config(c.scheduler_config)
        self.scheduler.set_timesteps(self.s.steps)
        self.prediction_type = self.scheduler.config.prediction_type
        self.timesteps = [int(t) for t in self.scheduler.timesteps]  # high to low
        self.step_size = self.scheduler.config.num_train_timesteps // self.s.steps
        self.scaling = float(self.vae.config.scaling_factor)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        self.final_alpha = torch.as_tensor(self.scheduler.final_alpha_cumprod).to(self.device)
        self.controller: P2PController | None = None
        self.record_tokens: dict | None = None
        self.unet_forward = 0
        self._plain_processors = dict(self.unet.attn_processors)

    # -- modules
    def alpha(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha

    def unet_out(self, latent, t: int, emb) -> torch.Tensor:
        self.unet_forward += latent.shape[0]
        return self.unet(latent, torch.tensor([t], device=self.device), emb, return_dict=False)[0]

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.text_encoder(input_ids=self.tokens.ids(prompts).to(self.device)).last_hidden_state

    @torch.no_grad()
    def image_to_latent(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] already at model size -> scaled latent from the encoder mean."""
        x = torch.from_numpy(image).float().permute(2, 0, 1)[None].to(self.device) / 127.5 - 1
        return self.vae.encode(x).latent_dist.mean * self.scaling

    @torch.no_grad()
    def latent_to_image(self, latent: torch.Tensor) -> np.ndarray:
        x = self.vae.decode(latent / self.scaling, return_dict=False)[0]
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    def prev_step(self, out, t: int, latent) -> torch.Tensor:
        return ddim_step(out, latent, self.alpha(t), self.alpha(t - self.step_size), self.prediction_type)

    # -- pivotal DDIM inversion
    @torch.no_grad()
    def ddim_inversion(self, z0: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        """Pivots [z_0, z_1, ..., z_T] (latent levels: final alpha, then timesteps low to high)."""
        levels = [-1] + self.timesteps[::-1]  # -1: the level of the clean latent (final alpha)
        pivots = [z0]
        z = z0
        for i in range(self.s.steps):
            t_from, t_to = levels[i], levels[i + 1]
            t_unet = max(t_from, 0) if self.s.pairing == "consistent" else t_to
            out = self.unet_out(z, t_unet, cond)
            z = ddim_step(out, z, self.alpha(t_from), self.alpha(t_to), self.prediction_type)
            pivots.append(z)
        return pivots

    # -- null-text optimization (docs/design.md §1, notebook schedule)
    def null_text(self, pivots: list[torch.Tensor], cond: torch.Tensor, uncond: torch.Tensor) -> NullTextResult:
        s = self.s
        result = NullTextResult([], [])
        latent = pivots[-1]
        emb = (cond if s.null_init == "prompt" else uncond).clone()
        lean = s.inner_loop == "lean"
        for i, t in enumerate(self.timesteps):
            result.latents.append(latent.clone())
            emb = emb.clone().detach().requires_grad_(True)
            opt = torch.optim.Adam([emb], lr=s.lr * (1.0 - i / 100.0))
            target = pivots[len(pivots) - i - 2]
            threshold = s.early_stop + i * s.early_stop_slope
            with torch.no_grad():
                cond_out = self.unet_out(latent, t, cond)
            losses = []
            done = None
            for j in range(s.inner_steps):
                with torch.enable_grad():
                    uncond_out = self.unet_out(latent, t, emb)
                    guided = uncond_out + s.guidance * (cond_out - uncond_out)
                    rec = self.prev_step(guided, t, latent)
                    loss = F.mse_loss(rec, target)
                    opt.zero_grad()
                    loss.backward()
                result.unet_backward += 1
                losses.append(loss.item())
                if lean and (losses[-1] < threshold or j == s.inner_steps - 1):
                    done = rec.detach()
                    break
                opt.step()
                if losses[-1] < threshold:
                    break
            result.losses.append(losses)
            emb = emb.detach()
            result.null_embeddings.append(emb[:1].clone())
            if done is not None:  # lean: the gradient pass already advanced the latent
                latent = done
                continue
            with torch.no_grad():
                # The notebook's batch-2 pass; the conditional half is the cond_out already known.
                both = self.unet_out(torch.cat([latent] * 2), t, torch.cat([emb, cond]))
                u, c = both.chunk(2)
                latent = self.prev_step(u + s.guidance * (c - u), t, latent)
        result.unet_forward = self.unet_forward
        result.final_latent = latent
        return result

    # -- the cheap alternatives
    def npi(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """Negative-prompt inversion: the null embedding is the prompt embedding at every step."""
        return [cond.clone() for _ in self.timesteps]

    @torch.no_grad()
    def direct_offsets(self, pivots, cond, uncond) -> list[torch.Tensor]:
        """Direct Inversion: per step, pivot minus the guided step taken from the pivot."""
        offsets = []
        for i, t in enumerate(self.timesteps):
            latent = pivots[len(pivots) - 1 - i]
            both = self.unet_out(torch.cat([latent] * 2), t, torch.cat([uncond, cond]))
            u, c = both.chunk(2)
            rec = self.prev_step(u + self.s.guidance * (c - u), t, latent)
            offsets.append(pivots[len(pivots) - 2 - i] - rec)
        return offsets

    def guided_noise(self, latent, t: int, cond, uncond) -> torch.Tensor:
        """Classifier-free guided noise at one latent (one batch-2 UNet call)."""
        both = self.unet_out(torch.cat([latent] * 2), t, torch.cat([uncond, cond]))
        u, c = both.chunk(2)
        return u + self.s.guidance * (c - u)

    # -- sampling / editing
    @torch.no_grad()
    def sample(self, z_t: torch.Tensor, conds: torch.Tensor, nulls: list[torch.Tensor],
               offsets: list[torch.Tensor] | None = None, trajectory: list | None = None) -> torch.Tensor:
        """Guided DDIM from z_T for K prompts with per-step null embeddings; controller if one is set.

        trajectory, if given, receives the latent each step starts from."""
        k = conds.shape[0]
        latent = z_t.expand(k, *z_t.shape[1:]).clone()
        for i, t in enumerate(self.timesteps):
            if trajectory is not None:
                trajectory.append(latent.clone())
            null = nulls[i].expand(k, *nulls[i].shape[1:])
            both = self.unet_out(torch.cat([latent] * 2), t, torch.cat([null, conds]))
            if self.controller is not None:
                self.controller.end_unet_call()
            u, c = both.chunk(2)
            latent = self.prev_step(u + self.s.guidance * (c - u), t, latent)
            if offsets is not None:
                latent = torch.cat([latent[:1] + offsets[i], latent[1:]])
            if self.controller is not None:
                latent = self.controller.step_callback(latent, i)
        return latent

    def layout(self, latent_shape) -> dict[str, tuple[bool, int]]:
        self.record_tokens = {}
        self.unet.set_attn_processor({n: _ControlledProcessor(self, n) for n in self._plain_processors})
        try:
            cross_dim = self.unet.config.cross_attention_dim
            with torch.no_grad():
                self.unet(torch.zeros(latent_shape, device=self.device), torch.tensor([1], device=self.device),
                          torch.zeros(1, MAX_TOKENS, cross_dim, device=self.device))
            return dict(self.record_tokens)
        finally:
            self.record_tokens = None
            self.unet.set_attn_processor(dict(self._plain_processors))

    @torch.no_grad()
    def edit(self, z_t, prompts: list[str], spec: EditSpec, nulls, offsets=None, map_resolution: int | None = None,
             conds: torch.Tensor | None = None, self_max_tokens: int | None = None):
        """Prompt-to-Prompt edit of [source, edits...]; returns (latents [K,...], controller).

        For diagnostics: `conds` replaces the prompts' embeddings, and `self_max_tokens` the size below which
        self-attention is injected (default: every level but the finest, as the notebook does for SD)."""
        lay = self.layout(z_t.shape)
        latent_size = z_t.shape[-1]
        cross = {int(round(n ** 0.5)) for c, n in lay.values() if c}
        if map_resolution is None:
            from .graphs import choose_map_resolution

            map_resolution = choose_map_resolution(cross, latent_size)
        self_max = self_max_tokens or max(n for c, n in lay.values() if not c)
        ctl = P2PController(self.tokens, prompts, spec, self.s.steps, map_resolution ** 2, self_max, self.device)
        self.controller = ctl
        self.unet.set_attn_processor({n: _ControlledProcessor(self, n) for n in self._plain_processors})
        try:
            latents = self.sample(z_t, self.encode_prompts(prompts) if conds is None else conds, nulls, offsets)
        finally:
            self.controller = None
            self.unet.set_attn_processor(dict(self._plain_processors))
        return latents, ctl


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (PIL bicubic); the engine does the same with sharp."""
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top:top + side, left:left + side]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    err = (a - b) ** 2
    if mask is not None:
        err = err[mask]
    mse = float(err.mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def graph_control_inputs(ctl: P2PController, step: int) -> dict[str, np.ndarray]:
    """The notebook controller's state at a step, as the inputs of `unet/control.onnx`.

    This is the contract the engine implements: refine's index mapper becomes a one-hot [77, 77] matrix,
    replace's mapper is used as is, the reweight factors become rows 1.. of `reweight` (row 0, the source,
    stays 1), and the time-word alpha and the self-replace window become the two flags.
    """
    k = ctl.k
    if ctl.alphas is None:
        mapper = ctl.mapper.clone()
        alphas = torch.ones(k - 1, MAX_TOKENS)
    else:
        mapper = torch.zeros(k - 1, MAX_TOKENS, MAX_TOKENS)
        for b in range(k - 1):
            for y, x in enumerate(ctl.mapper[b].tolist()):
                if x >= 0:
                    mapper[b, x, y] = 1
        alphas = ctl.alphas.clone()
    reweight = torch.ones(k, MAX_TOKENS)
    if ctl.equalizer is not None:
        reweight[1:] = ctl.equalizer
    cross = float(ctl.cross_alpha[step].reshape(-1)[0])
    self_on = float(ctl.self_steps[0] <= step < ctl.self_steps[1])
    return {
        "mapper": mapper.numpy().astype(np.float32),
        "alphas": alphas.numpy().astype(np.float32),
        "reweight": reweight.numpy().astype(np.float32),
        "cross_flag": np.array([cross], dtype=np.float32),
        "self_flag": np.array([self_on], dtype=np.float32),
    }
