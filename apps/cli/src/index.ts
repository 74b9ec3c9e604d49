export { buildProgram } from './commands.js';
