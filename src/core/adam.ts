/**
 * Adam exactly as torch.optim.Adam with its defaults (betas 0.9/0.999, eps 1e-8, no weight decay, no
 * amsgrad), on one flat float32 parameter updated in place. The null-text step creates a fresh one per
 * timestep, as the paper does.
 */
export class Adam {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private t = 0;

  constructor(
    private readonly param: Float32Array,
    private readonly lr: number,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    private readonly eps = 1e-8,
  ) {
    this.m = new Float32Array(param.length);
    this.v = new Float32Array(param.length);
  }

  step(grad: Float32Array): void {
    if (grad.length !== this.param.length) throw new Error(`gradient has ${grad.length} values, parameter ${this.param.length}`);
    this.t += 1;
    const bias1 = 1 - this.beta1 ** this.t;
    const bias2Sqrt = Math.sqrt(1 - this.beta2 ** this.t);
    const stepSize = this.lr / bias1;
    const { m, v, param, beta1, beta2, eps } = this;
    for (let i = 0; i < param.length; i++) {
      const g = grad[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      param[i] -= (stepSize * m[i]) / (Math.sqrt(v[i]) / bias2Sqrt + eps);
    }
  }
}
