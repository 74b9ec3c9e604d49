export { createOciRuntime, type OciRuntimeOpts } from './driver.js';
export { checkHostPrerequisites, type HostProblem } from './prereqs.js';
export {
  createImageStore, defaultImageRecipe, recipeHash, DEFAULT_IMAGE_CACHE, type ImageStore, type ImageRecipe,
} from './images.js';
export { SHIFT_BASE, BRIDGE } from './constants.js';
export { findResidue } from './residue.js';
export type { EngineName } from './engine.js';
