/** Which model folder the extension uses: the setting, else the first of the bundled models.json. */
import * as path from "node:path";
import * as vscode from "vscode";
import { KnownModel, readModelList } from "../core/modelList";

/** The bundled models (models.json in the extension). */
export function knownModels(extensionPath: string): Promise<KnownModel[]> {
  return readModelList(path.join(extensionPath, "models.json"));
}

/** The folder of the nullText.modelFolder setting, as a model entry ([] when unset). */
export async function configuredModel(): Promise<KnownModel[]> {
  const folder = vscode.workspace.getConfiguration("nullText").get<string>("modelFolder", "").trim();
  return folder ? [{ id: path.basename(folder), name: `${path.basename(folder)} (configured)`, path: path.resolve(folder) }] : [];
}

export async function modelFolder(extensionPath: string): Promise<string> {
  const configured = vscode.workspace.getConfiguration("nullText").get<string>("modelFolder", "").trim();
  if (configured) return configured;
  const [first] = await knownModels(extensionPath);
  if (!first) throw new Error("no model configured and no models.json in the extension: run Null-text: Select Model");
  return first.path;
}

/** A quick pick of the known models plus "Browse…"; the choice is validated before it is saved. */
export async function selectModel(extensionPath: string, log: (line: string) => void): Promise<void> {
  const known = await knownModels(extensionPath);
  const browse = { label: "$(folder) Browse for a model folder…", detail: "a folder exported with `python -m exporter export`" };
  const items = [...known.map((m) => ({ label: m.name, description: m.id, detail: m.description, folder: m.path })), browse];
  const pick = await vscode.window.showQuickPick(items, { title: "Model for Null-text Inversion", matchOnDetail: true });
  if (!pick) return;
  let folder = "folder" in pick ? pick.folder : undefined;
  if (!folder) {
    const chosen = await vscode.window.showOpenDialog({ canSelectFiles: false, canSelectFolders: true, title: "Model folder (with nti.json)" });
    folder = chosen?.[0]?.fsPath;
  }
  if (!folder) return;
  try {
    const { Model } = await import("../core/model"); // loads onnxruntime only when a model is chosen
    const model = await Model.open(folder);
    await model.release();
    const bundled = known.find((m) => m.path === folder);
    await vscode.workspace.getConfiguration("nullText").update("modelFolder", bundled === known[0] ? "" : folder, vscode.ConfigurationTarget.Workspace);
    log(`model: ${model.id} (${folder})`);
    void vscode.window.showInformationMessage(`Null-text Inversion now uses the model "${model.id}".`);
  } catch (error) {
    void vscode.window.showErrorMessage(`Not a usable model folder: ${(error as Error).message}`);
  }
}
